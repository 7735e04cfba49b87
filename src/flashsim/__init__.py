"""flashsim: train, export (ONNX) and validate the ML parameterizations of an LHCb-style flash simulation."""

__version__ = "0.1.0"
