"""Image content store: OCI layout, import of root filesystems, shared unpacked layers."""
from .image import Image
from .reference import Reference, normalize_reference, parse_reference
from .store import ImageInUseError, ImageNotFoundError, ImageStore

__all__ = ["Image", "ImageStore", "ImageInUseError", "ImageNotFoundError", "Reference",
           "normalize_reference", "parse_reference"]
