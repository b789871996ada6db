"""The model layer: the networks, the files they are saved in, inference and export.

Networks are plain `nn.Module`s, one module each (`mlp.py`, `cnn.py`, named in `registry.py`);
model files carry everything needed to rebuild and use them, read without unpickling code
(`files.py`); `inference.py` runs them in batches and `export.py` writes ONNX and TorchScript.
Builds on the data layer only.
"""
