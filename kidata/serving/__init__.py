"""Serving a trained run over openpi's remote-inference protocol (websocket + msgpack-numpy), and
the client the evaluator uses to run against a server. Extra ``kidata[serve]``."""
