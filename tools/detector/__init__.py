"""The detector room: YOLO detection, ByteTrack timelines, tools, training, conversion."""
