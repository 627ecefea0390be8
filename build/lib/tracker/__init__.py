"""saga-tracker: reconstructs choreographed sagas from the events services already publish."""

__version__ = "0.1.0"
