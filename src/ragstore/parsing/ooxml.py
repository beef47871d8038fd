"""Office Open XML archives (DOCX, PPTX): what one may unpack to before a parser opens it."""

from __future__ import annotations

import io
import zipfile

from ragstore.errors import CorruptDocumentError

# python-docx and python-pptx read every part into memory and lxml builds a tree several
# times the size of the XML, so a small archive of a huge, well-compressed part (a zip
# bomb) would take gigabytes; real documents unpack to a few megabytes of XML and their
# images. The sizes checked are those the archive declares, which zipfile never reads past.
MAX_UNPACKED_BYTES = 256 * 1024 * 1024


def check_unpacked_size(data: bytes, name: str, fmt: str, program: str) -> None:
    """Refuse an archive that declares more than :data:`MAX_UNPACKED_BYTES` of content."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        return  # the parser reports it, in the words it uses for every non-zip
    if total > MAX_UNPACKED_BYTES:
        raise CorruptDocumentError(
            f"{name}: unpacks to {total} bytes, over the {MAX_UNPACKED_BYTES} bytes a {fmt} "
            f"may hold (a zip bomb, or not a real document); open it in {program} and save a "
            "copy without the oversized content"
        )
