"""The batch on the device, for decode on the device (decode_device.py).

Decoded images go into a ring of slots in one device buffer, (slots, size, size, 3) uint8: the decode thread
crops and resizes each image into a free slot (models/resize_graph.py, on the backbone's provider; pixels the CPU
decoder made are copied in by the same graph). A batch is then only the slot of each of its rows: the backbone
runs over a gathering graph (models/graph_input.gathering_graph) that takes the whole buffer and the rows, so an
image is never copied again once it is in its slot, and the embed loop's thread makes one ONNX Runtime call per
batch and none per image. A batch's slots go back to the ring once it has run; the decode thread waits for free
slots, so device memory stays fixed (the ring holds the decode window, the chunk being decoded and one batch).
"""
from __future__ import annotations

import queue

import numpy as np

from featstore.embed.run import Backbone
from featstore.models.catalog import Preprocess
from featstore.models.resize_graph import geometry, resize_graph


class SlotRing:
    """`slots` image slots on `device`, filled by one thread and handed back by another."""

    def __init__(self, slots: int, pre: Preprocess, device: str):
        import onnxruntime as ort

        from featstore.models.session import providers, session_options

        self.pre, self.device, self.slots = pre, device, slots
        self.value = ort.OrtValue.ortvalue_from_shape_and_type([slots, pre.size, pre.size, 3], np.uint8, device, 0)
        self._slot_bytes = pre.size * pre.size * 3
        self._free: queue.Queue = queue.Queue()
        for i in range(slots):
            self._free.put(i)
        self._session = ort.InferenceSession(resize_graph(pre).SerializeToString(), session_options(1),
                                             providers=providers(device))
        self._copy = geometry(pre.size, pre.size, Preprocess(size=pre.size, resize="exact"))   # the identity

    def put_image(self, img, geo: dict) -> int | None:
        """Crop and resize a decoded nvImageCodec image into a free slot (waiting for one), by the resize graph's
        inputs `geo` (resize_graph.geometry); its slot, or None once the ring is closed."""
        on_device = getattr(img, "cuda_stream", None) is not None
        interface = img.__cuda_array_interface__ if on_device else img.__array_interface__
        if not _dense(interface):              # padded rows: through the host, correct if slower
            img, on_device = np.ascontiguousarray(np.asarray(img.cpu())), False
            interface = img.__array_interface__
        return self._into_slot(interface["data"][0], interface["shape"], "cuda" if on_device else "cpu", geo, img)

    def put_pixels(self, pixels: np.ndarray) -> int | None:
        """Copy pixels already at the model's input size (the CPU decoder's) into a free slot."""
        pixels = np.ascontiguousarray(pixels)
        return self._into_slot(pixels.ctypes.data, pixels.shape, "cpu", self._copy, pixels)

    def _into_slot(self, ptr: int, shape, where: str, geo: dict, keep) -> int | None:
        slot = self._free.get()
        if slot < 0:                            # closed: leave the mark for the next taker too
            self._free.put(slot)
            return None
        binding = self._session.io_binding()
        binding.bind_input("image", where, 0, np.uint8, list(shape), ptr)
        for name, value in geo.items():
            binding.bind_cpu_input(name, value)
        binding.bind_output("pixels", self.device, 0, np.uint8, [self.pre.size, self.pre.size, 3],
                            self.value.data_ptr() + slot * self._slot_bytes)
        self._session.run_with_iobinding(binding)      # returns once the slot is written
        del keep                                       # the source lived until then
        return slot

    def give(self, slots) -> None:
        for s in slots:
            self._free.put(s)

    def close(self) -> None:
        """From now on a filler waiting for a slot gets None (the run is over or failed)."""
        self._free.put(-1)


class DeviceBatch:
    """A batch of slots of a SlotRing; the item rows ride along as in local.Batch."""

    def __init__(self, size: int, ring: SlotRing, backbone: Backbone):
        self.capacity, self.ring, self.backbone = size, ring, backbone
        self.hashes: list[str] = []
        self.rows: list[dict] = []
        self.slots: list[int] = []

    def add(self, prep) -> None:
        self.slots.append(prep.slot)
        self.hashes.append(prep.hash)

    def skip(self, prep) -> None:
        """A decoded file the batch does not take (a copy of content already batched): its slot goes back."""
        if prep.slot is not None:
            self.ring.give([prep.slot])

    @property
    def full(self) -> bool:
        return len(self.hashes) == self.capacity

    def clear(self) -> None:
        self.hashes, self.rows, self.slots = [], [], []

    def run(self, _backbone, pre: Preprocess) -> np.ndarray:
        """Features of the batch's rows, through the gathering graph; rows padded to the batch size with the
        first slot (computed and dropped), so the session sees one input shape. The slots go back after."""
        n = len(self.slots)
        rows = np.array(self.slots + [self.slots[0]] * (self.capacity - n), np.int64)
        try:
            return self.backbone.run_gathered(self.ring.value, rows, pre)[:n]
        finally:
            self.ring.give(self.slots)


def gathering_backbone(backbone: Backbone, pre: Preprocess) -> Backbone:
    """A session like `backbone`'s over its gathering graph (the pixel-input graph with a Gather in front)."""
    from featstore.models.graph_input import gathering_graph, pixel_input_graph

    pixel_graph = backbone.onnx_path if backbone.pixels_for is not None else pixel_input_graph(backbone.onnx_path,
                                                                                                pre)
    return Backbone(gathering_graph(pixel_graph), device=backbone.requested, threads=backbone.threads,
                    spin=backbone.spin, io_binding=False, pixels_for=pre)


def to_host(value) -> np.ndarray:
    """An OrtValue's contents on the host (on a device: through a one-node graph on its provider)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from featstore.models.session import providers

    if value.device_name() == "cpu":
        return value.numpy()
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, value.shape())
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, value.shape())
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "copy", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=providers(value.device_name()))
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", value)
    binding.bind_output("y", "cpu")
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]


def _dense(interface: dict) -> bool:
    strides = interface.get("strides")
    h, w, c = interface["shape"]
    return strides is None or tuple(strides) == (w * c, c, 1)
