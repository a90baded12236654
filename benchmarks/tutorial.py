"""The image loading the transfer-learning tutorials write (shared by the benchmarks that compare with them):
PIL open, RGB, resize the shorter side to size / 0.875 (bicubic), centre crop, normalise (x - 127) / 128, CHW."""
import numpy as np


def load(path, size: int):
    import torch
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = int(size / 0.875) / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    x = np.asarray(img.crop((left, top, left + size, top + size)), np.float32)
    return torch.from_numpy(((x - 127.0) / 128.0).transpose(2, 0, 1).copy())
