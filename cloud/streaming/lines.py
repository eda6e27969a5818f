"""PostgreSQL ``COPY ... (FORMAT csv)`` text built by Spark itself (no per-row Python).

``copy_lines`` is a pure transform: one ``line`` column holding a complete CSV record and its
newline, made by Spark's ``to_csv`` SQL function on the executors. The driver then collects that
single column as Arrow and hands the contiguous UTF-8 buffer(s) to COPY unchanged, which removes
the ``pandas.to_csv`` step that dominates a driver-side ``toPandas`` sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

CSV_OPTIONS: Final[dict[str, str]] = {
    # PostgreSQL CSV doubles a quote inside a quoted value; Spark's default escape is a backslash.
    "escape": '"',
    "timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX",
    # Writers trim whitespace by default; payload text must reach the table as it came.
    "ignoreLeadingWhiteSpace": "false",
    "ignoreTrailingWhiteSpace": "false",
}
"""NULL is written as an empty unquoted field and '' as ``""``, which is what COPY CSV expects."""


def copy_lines(df: DataFrame, columns: Sequence[str], *extra: Any) -> DataFrame:
    """``df`` -> ``line`` (CSV record of ``columns`` + newline), keeping ``extra`` columns too."""
    line = F.concat(F.to_csv(F.struct(*columns), CSV_OPTIONS), F.lit("\n")).alias("line")
    return df.select(*extra, line)


def string_array_bytes(arr: pa.Array | pa.ChunkedArray) -> bytes:
    """Concatenated values of a (large_)string Arrow array without per-value Python objects.

    Each chunk's values sit back to back in its data buffer; the offsets say where the chunk's
    slice starts and ends. NULL values would be empty there, but ``line`` is never NULL.
    """
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    out: list[bytes] = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        if chunk.null_count:
            raise ValueError("COPY line column holds NULLs")
        width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        _, offsets_buf, data_buf = chunk.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=width)[chunk.offset : chunk.offset + len(chunk) + 1]
        start, end = int(offsets[0]), int(offsets[-1])
        out.append(data_buf.slice(start, end - start).to_pybytes())
    return b"".join(out)
