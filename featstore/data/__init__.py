"""Package data: real photos (CC BY 2.0, credits beside them) used to check ONNX exports against torch."""
