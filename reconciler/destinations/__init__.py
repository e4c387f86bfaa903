"""Where new token values go besides a file: Vault/OpenBao, AWS Secrets Manager, commands.

Importing this package imports neither hvac nor boto3: each store's client is imported
the first time a destination of that kind is checked or used.
"""

from reconciler.destinations.base import Delivery, Destination, Undo
from reconciler.destinations.deliver import check_all, deliver_all, ordered
from reconciler.destinations.file import FileDestination
from reconciler.destinations.parse import FilePath, parse_destination
from reconciler.errors import (
    DeliveryAbortedError,
    DeliveryFailedError,
    DestinationCheckError,
    DestinationError,
    DestinationSyntaxError,
    UndoFailedError,
)

__all__ = [
    "Delivery",
    "DeliveryAbortedError",
    "DeliveryFailedError",
    "Destination",
    "DestinationCheckError",
    "DestinationError",
    "DestinationSyntaxError",
    "FileDestination",
    "FilePath",
    "Undo",
    "UndoFailedError",
    "check_all",
    "deliver_all",
    "ordered",
    "parse_destination",
]
