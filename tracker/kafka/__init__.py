"""Kafka contact: the one module that reaches into faust/aiokafka internals, the client
factory, topic administration and the embedded broker."""
