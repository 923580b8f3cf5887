"""The detector room: YOLO detection and ByteTrack timelines of instruments.

``engine`` (`InstrumentDetector`), ``tools`` (``instruments_at``, ``instrument_timeline``),
``types`` (detections, timelines, tool results), ``train`` (training and evaluation),
``data`` (YOLO datasets), ``convert`` (public annotation formats to YOLO), ``yolo`` (the
only module that imports ultralytics, kept offline).
"""
