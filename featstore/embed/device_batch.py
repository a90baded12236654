"""The batch on the device, for decode on the device (decode_device.py).

Decoded images go into a ring of slots in one device buffer, (slots, size, size, 3) uint8, handed out a region
(a chunk's worth of consecutive slots) at a time: the decode thread stages a chunk's decoded images, padded to one
shape, in a staging buffer and crops and resizes all of them into the region's slots in one ONNX Runtime call
(models/resize_graph.py, on the backbone's provider; pixels the CPU decoder made at the model's size go through
the same call, resampled by the identity). A batch is then only the slot of each of its rows: the backbone runs
over a gathering graph (models/graph_input.gathering_graph) that takes the whole buffer and the rows, so an image
is never copied again once it is in its slot, and the embed loop's thread makes one ONNX Runtime call per batch.
Slots go back one by one (a batch's after it has run, a copy's at once); a region is free again once all its
slots are back, and the decode thread waits for a free region, so device memory stays fixed.
"""
from __future__ import annotations

import queue
import threading

import numpy as np

from featstore.embed.run import Backbone
from featstore.models.catalog import Preprocess
from featstore.models.resize_graph import geometry, resize_graph

STAGING_PIXELS = 64_000_000        # source pixels staged for one resize call (a chunk of large photos takes several)


class SlotRing:
    """`regions` regions of `region` slots each on `device`, filled a region at a time by one thread and handed
    back slot by slot by another."""

    def __init__(self, regions: int, pre: Preprocess, device: str, region: int):
        import onnxruntime as ort

        from featstore.models.session import providers, session_options

        self.pre, self.device, self.region, self.slots = pre, device, region, regions * region
        self.value = ort.OrtValue.ortvalue_from_shape_and_type([self.slots, pre.size, pre.size, 3], np.uint8,
                                                                device, 0)
        self._slot_bytes = pre.size * pre.size * 3
        self._free: queue.Queue = queue.Queue()          # region numbers; -1 once closed
        for r in range(regions):
            self._free.put(r)
        self._left = [0] * regions                       # slots of each region not handed back yet
        self._lock = threading.Lock()
        self._session = ort.InferenceSession(resize_graph(pre).SerializeToString(), session_options(1),
                                             providers=providers(device))
        self._staging = None                             # on a device: the staging buffer, made on first use
        self._identity = geometry(pre.size, pre.size, Preprocess(size=pre.size, resize="exact"))  # CPU pixels
        self.resize_calls = 0

    def resize_into(self, sources: list, stream: int | None = None) -> list[int | None]:
        """Crop and resize up to a region's worth of images into the slots of a free region (waiting for one):
        `sources` are nvImageCodec images (on the device or the host) or (size, size, 3) uint8 arrays at the
        model's size. Their slots, or Nones once the ring is closed. One resize call per STAGING_PIXELS."""
        if not sources:
            return []
        base = self._take()
        if base is None:
            return [None] * len(sources)
        self.give(range(base + len(sources), base + self.region))         # what this chunk does not fill
        shapes = [tuple(int(d) for d in src.shape[:2]) for src in sources]
        order = sorted(range(len(sources)), key=lambda k: shapes[k])      # like shapes together: less padding
        slots: list[int | None] = [None] * len(sources)
        start = 0
        for group in _groups([shapes[k] for k in order]):
            picked = order[start:start + group]
            self._resize([sources[k] for k in picked], [shapes[k] for k in picked], base + start, stream)
            for offset, k in enumerate(picked):
                slots[k] = base + start + offset
            start += group
        return slots

    def _resize(self, sources: list, shapes: list, first_slot: int, stream: int | None) -> None:
        """One call of the resize graph: `sources` staged padded to one shape, resized into consecutive slots."""
        n = len(sources)
        height, width = max(h for h, _ in shapes), max(w for _, w in shapes)
        boxes, extents = zip(*(self._identity if isinstance(src, np.ndarray) else geometry(w, h, self.pre)
                               for src, (h, w) in zip(sources, shapes)))
        binding = self._session.io_binding()
        keep = self._stage(sources, shapes, (n, height, width), binding, stream)
        binding.bind_cpu_input("boxes", np.stack(boxes))
        binding.bind_cpu_input("extents", np.stack(extents))
        binding.bind_output("pixels", self.device, 0, np.uint8, [n, self.pre.size, self.pre.size, 3],
                            self.value.data_ptr() + first_slot * self._slot_bytes)
        self._session.run_with_iobinding(binding)       # returns once the slots are written
        self.resize_calls += 1
        del keep                                        # the sources lived until then

    def _stage(self, sources: list, shapes: list, shape: tuple, binding, stream: int | None):
        """Put the sources in one padded (n, height, width, 3) buffer bound as the graph's input; what must live
        until the call has run."""
        n, height, width = shape
        if self.device == "cpu":
            staged = np.zeros((n, height, width, 3), np.uint8)
            for k, (src, (h, w)) in enumerate(zip(sources, shapes)):
                host = src if hasattr(src, "__array_interface__") else src.cpu()        # nvImageCodec's on the host
                staged[k, :h, :w] = np.asarray(host)[:, :, :3]
            binding.bind_input("images", "cpu", 0, np.uint8, [n, height, width, 3], staged.ctypes.data)
            return staged
        from featstore.embed.cuda_runtime import cuda

        if self._staging is None:
            import onnxruntime as ort

            self._staging = ort.OrtValue.ortvalue_from_shape_and_type([STAGING_PIXELS * 3], np.uint8, "cuda", 0)
        dst, pitch, held = self._staging.data_ptr(), width * 3, []
        for k, (src, (h, w)) in enumerate(zip(sources, shapes)):
            if isinstance(src, np.ndarray):
                src = np.ascontiguousarray(src)
                ptr, src_pitch = src.ctypes.data, src.strides[0]
            else:
                face = getattr(src, "__cuda_array_interface__", None) or src.__array_interface__
                ptr = face["data"][0]
                src_pitch = (face.get("strides") or (w * 3,))[0]
            held.append(src)
            cuda().copy_2d(dst + k * height * pitch, pitch, ptr, src_pitch, w * 3, h, stream or 0)
        cuda().synchronize(stream or 0)                 # staged before ONNX Runtime's stream reads it
        binding.bind_input("images", "cuda", 0, np.uint8, [n, height, width, 3], dst)
        return held

    def _take(self) -> int | None:
        region = self._free.get()
        if region < 0:                                  # closed: leave the mark for the next taker too
            self._free.put(region)
            return None
        with self._lock:
            self._left[region] = self.region
        return region * self.region

    def give(self, slots) -> None:
        """Hand slots back; a region whose slots are all back is free again."""
        freed = []
        with self._lock:
            for s in slots:
                region = s // self.region
                self._left[region] -= 1
                if self._left[region] == 0:
                    freed.append(region)
        for region in freed:
            self._free.put(region)

    def close(self) -> None:
        """From now on a filler waiting for a region gets Nones (the run is over or failed)."""
        self._free.put(-1)


def _groups(shapes: list[tuple[int, int]]) -> list[int]:
    """Sizes of consecutive groups of images (sorted by shape) whose padded staging fits STAGING_PIXELS."""
    sizes, n, height, width = [], 0, 0, 0
    for h, w in shapes:
        if n and (n + 1) * max(height, h) * max(width, w) > STAGING_PIXELS:
            sizes.append(n)
            n, height, width = 0, 0, 0
        n, height, width = n + 1, max(height, h), max(width, w)
    return sizes + ([n] if n else [])


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
