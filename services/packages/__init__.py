"""Model packages: validating and unpacking an uploaded zip (`validation`, with the
zip-entry checks in `_zipcheck`, the source checks in `_sources` and `run`'s typed
inputs read in `_signature`), a version's typed inputs compiled for checks and JSON
Schema (`schema`), and zipping a folder into one (`zipping`)."""

from services.packages._zipcheck import PackageInvalidError
from services.packages.validation import PackageInfo, PackageLimits, inspect_package, unpack_package
from services.packages.zipping import zip_folder

__all__ = [
    "PackageInfo",
    "PackageInvalidError",
    "PackageLimits",
    "inspect_package",
    "unpack_package",
    "zip_folder",
]
