"""The embed pipeline, one file per stage in data order:

  source.py / manifest.py / text_source.py   what to embed: a folder, a manifest of images, a text table
  decode.py (decode_pool.py: in processes)   file bytes -> RGB pixels at the model's input size
  decode_device.py (device_batch.py)         the same on the GPU (nvImageCodec), into image slots on the device
  run.py                                     the ONNX Runtime session: pixels or tokens -> pooled features
  write.py                                   a writer thread: one store transaction per batch

local.py composes them for images and text.py for texts; backbones.py opens the runnable backbone for a model or
a stored embedding set; ray.py (with shards.py and ingest.py) runs the same stages on Ray Data.
"""
