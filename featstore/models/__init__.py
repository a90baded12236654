"""Backbones turned into runnable ONNX graphs: the catalogue (catalog.py, reading the declarative files shipped as
featstore.models.catalogue), the model's input transform (preprocess.py), export with a parity check
(export.py, torch_backbones.py), int8/fp16 graphs (precision.py), the uint8 pixel-input graph for CUDA
(graph_input.py, with its gathering variant for image slots on the device), the crop/resize graph for images
decoded on the GPU (resize_graph.py), ONNX Runtime sessions (session.py) and the text tokenizer (tokenize.py).

Every graph is finished here, before the embed pipeline opens a session on it.
"""
