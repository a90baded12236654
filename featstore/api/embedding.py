"""The embed verb: decide what SOURCE is (a folder of images, a manifest of images, or a text source), check the
options against it before the store is touched, then label and embed it with the local or the Ray engine."""
from __future__ import annotations

import os

from featstore.api.options import EmbedOptions
from featstore.errors import FeatstoreError


def model_spec(opts: EmbedOptions):
    """The catalogue entry (at opts.input_size when given), or a spec for the user's own .onnx file."""
    from featstore.models.catalog import at_input_size, custom_onnx_spec, resolve

    if is_onnx_file(opts.model):
        if not opts.input_size:
            raise FeatstoreError("--model path.onnx needs --input-size (and --mean/--std if not (x-127)/128)")
        return custom_onnx_spec(opts.model, opts.input_size, mean=_triple(opts.mean), std=_triple(opts.std))
    spec = resolve(opts.model)
    return at_input_size(spec, opts.input_size) if opts.input_size else spec


def is_onnx_file(model: str | None) -> bool:
    return bool(model and model.lower().endswith(".onnx"))


def _triple(value) -> tuple:
    vals = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3:
        raise FeatstoreError(f"expected one or three numbers, got {value!r}")
    return tuple(vals)


def is_text(source: str, opts: EmbedOptions) -> bool:
    """Text when SOURCE is a text table or folder (and no image model is asked for), or a text model is asked for;
    an image manifest is never text."""
    from featstore.embed.manifest import is_image_manifest
    from featstore.embed.text_source import is_text_source
    from featstore.models.catalog import resolve

    if is_image_manifest(source, opts.text_column):
        return False
    if opts.model is None:
        return is_text_source(source)
    return not is_onnx_file(opts.model) and resolve(opts.model).modality == "text"


def embed(root, source: str, opts: EmbedOptions, log=print):
    """Embed SOURCE into the store at `root` (created if new): returns the run's EmbedSummary."""
    if not os.path.exists(source):
        raise FeatstoreError(f"{source}: no such file or folder")
    if opts.cut is None and opts.views != 1:
        from featstore.embed.cut_run import check_options

        check_options(None, None, opts.views)
    if is_text(source, opts):
        return _embed_text(root, source, opts, log)
    return _embed_images(root, source, opts, log)


def _embed_images(root, source: str, opts: EmbedOptions, log):
    from featstore.embed.backbones import open_backbone
    from featstore.embed.local import embed_files
    from featstore.embed.manifest import attach_metadata, is_image_manifest, metadata_columns, read_manifest
    from featstore.embed.source import is_image_name, scan_folder
    from featstore.models.precision import check as check_precision
    from featstore.models.session import expected_device
    from featstore.store.db import Store
    from featstore.store.vanished import folder_scope

    manifest = is_image_manifest(source, opts.text_column)
    if not os.path.isdir(source) and not manifest:
        raise FeatstoreError(f"{source}: images are embedded from a folder or a manifest (a table with a 'path' "
                             "column); any other file must be a text table (.csv .tsv .parquet .jsonl)")
    spec = model_spec(opts)
    if opts.cut:
        from featstore.embed.cut_run import check_options

        check_options(spec, opts.cut, opts.views, opts.engine)
    files, warnings = (read_manifest(source), []) if manifest else scan_folder(source)
    if manifest:
        metadata_columns(source)           # its names checked before the store is touched
    for w in warnings:
        log(f"warning: {w}")
    name = os.path.basename(os.path.abspath(source))
    task = opts.task or (os.path.splitext(name)[0] if manifest else name)
    check_precision(opts.precision, expected_device(opts.device))      # refuse before the store is touched
    if opts.decode == "device" and opts.engine == "local":
        from featstore.embed.decode_device import unavailable

        cannot = unavailable(spec.preprocess)
        if cannot:
            raise FeatstoreError(f"--decode device: {cannot}")
    progress = opts.progress
    scope = None if manifest else folder_scope(source, [f.key for f in files], is_image_name)
    with Store.open(root, write=True, wait=opts.wait, create=True) as store:
        backbone, eset = open_backbone(spec, device=opts.device, log=log, precision=opts.precision, store=store,
                                       calibration_paths=[f.path for f in files if not f.error])
        labels = {f.key: f.label for f in files if f.label}
        store.set_labels(task, labels)
        meta = attach_metadata(store, source) if manifest else None
        if meta:
            log(f"metadata: {len(meta['columns'])} columns ("
                + ", ".join(f"{c} {t}" for c, t in meta["columns"].items()) + f") for {meta['matched_paths']} paths")
        if opts.engine == "ray":
            from featstore.embed.ray import embed_with_ray

            summary = embed_with_ray(store, files, backbone, eset, spec.preprocess, staging=opts.staging,
                                     shard_size=opts.shard_size, workers=opts.workers or 1, address=opts.address,
                                     batch_size=opts.batch_size, progress=progress,
                                     source=os.path.abspath(source), log=log, scope=scope)
        else:
            summary = embed_files(store, files, backbone, eset, spec.preprocess, batch_size=opts.batch_size,
                                  workers=opts.workers, decode=opts.decode, retry_failed=opts.retry_failed,
                                  progress=progress, source=os.path.abspath(source), scope=scope)
        if opts.cut:
            from featstore.embed.cut_run import embed_cut_images

            summary.cut = embed_cut_images(store, files, spec, eset, opts.cut, opts.views, opts.view_seed,
                                           device=opts.device, workers=opts.workers, progress=progress, log=log)
    if opts.device == "auto" and summary.embedded and opts.engine == "local":
        log(f"device: {backbone.device} (ONNX Runtime providers: {', '.join(backbone.session.get_providers())})")
    summary.label_source = "from the manifest" if manifest else "from subfolder names"
    return _finish(summary, task, labels, warnings)


def _embed_text(root, source: str, opts: EmbedOptions, log):
    from featstore.embed.backbones import open_backbone
    from featstore.embed.text import embed_texts
    from featstore.embed.text_source import read_text_source, text_scope
    from featstore.models.catalog import resolve
    from featstore.models.tokenize import TextTokenizer
    from featstore.store.db import Store

    if opts.engine == "ray":
        raise FeatstoreError("--engine ray embeds images (a folder or a manifest); text runs on the local engine")
    if opts.input_size:
        raise FeatstoreError("--input-size is for image backbones; text is cut at the model's token limit")
    if opts.precision == "int8":
        raise FeatstoreError("--precision int8 is for image backbones (int8 MiniLM kept only 0.90-0.94 cosine "
                             "to fp32); text embeds in fp32, or fp16 on the GPU")
    spec = resolve(opts.model, modality="text")
    if opts.cut:
        from featstore.embed.cut_run import check_options

        check_options(spec, opts.cut, opts.views, opts.engine)
    records, warnings = read_text_source(source, opts.text_column, opts.label_column, opts.id_column)
    for w in warnings:
        log(f"warning: {w}")
    name = os.path.basename(os.path.abspath(source))
    task = opts.task or (name if os.path.isdir(source) else os.path.splitext(name)[0])
    backbone, eset = open_backbone(spec, device=opts.device, log=log, precision=opts.precision)
    with Store.open(root, write=True, wait=opts.wait, create=True) as store:
        labels = {r.key: r.label for r in records if r.label}
        store.set_labels(task, labels)
        summary = embed_texts(store, records, backbone, eset, TextTokenizer(spec), batch_size=opts.batch_size or 64,
                              retry_failed=opts.retry_failed, progress=opts.progress, source=os.path.abspath(source),
                              scope=text_scope(source, records))
        if opts.cut:
            from featstore.embed.cut_run import embed_cut_texts

            summary.cut = embed_cut_texts(store, records, spec, eset, opts.cut, device=opts.device,
                                          batch_size=opts.batch_size or 64, progress=opts.progress, log=log)
    return _finish(summary, task, labels, warnings)


def _finish(summary, task, labels, warnings):
    summary.task = task if labels else None
    summary.labelled = len(labels)
    summary.warnings = warnings
    return summary
