"""A minimal TensorBoard event-file writer for scalars (no TensorFlow / torch import).

TensorBoard reads TFRecord files of `Event` protos. This module hand-encodes the few proto fields
scalars need (`Event.wall_time`, `.step`, `.file_version`, `.summary.value[].tag /
.simple_value`) and frames each record as TFRecord does: little-endian uint64 length, masked
CRC-32C of the length, the payload, masked CRC-32C of the payload. Importing tensorboardX instead
costs ~10 s on CPU because it imports torch.
"""

from __future__ import annotations

import os
import socket
import struct
import time

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, scalars: dict[str, float] | None = None,
                 file_version: str | None = None) -> bytes:
    """Serialized `Event` proto with optional scalar summary values."""
    out = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars:
        summary = b""
        for tag, value in scalars.items():
            v = _length_delimited(1, tag.encode()) + _field(2, 5) + struct.pack("<f", value)
            summary += _length_delimited(1, v)
        out += _length_delimited(5, summary)
    return out


def frame_record(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return (header + struct.pack("<I", _masked_crc(header)) + payload
            + struct.pack("<I", _masked_crc(payload)))


class EventWriter:
    """Appends scalar events to `logdir/events.out.tfevents.<time>.<host>`."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "ab")
        self._file.write(frame_record(encode_event(time.time(), 0, file_version="brain.Event:2")))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._file.write(frame_record(encode_event(time.time(), step, values)))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
