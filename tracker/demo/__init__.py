"""The demo: an embedded broker, a tracker worker and one small service per step."""
