"""Typed errors of the PLC link: every failure of a Modbus request is one of these."""

from __future__ import annotations

from enum import IntEnum


class ModbusExceptionCode(IntEnum):
    """Exception codes a Modbus server answers with."""

    ILLEGAL_FUNCTION = 1
    ILLEGAL_DATA_ADDRESS = 2
    ILLEGAL_DATA_VALUE = 3
    SERVER_DEVICE_FAILURE = 4
    ACKNOWLEDGE = 5
    SERVER_DEVICE_BUSY = 6
    MEMORY_PARITY_ERROR = 8
    GATEWAY_PATH_UNAVAILABLE = 10
    GATEWAY_TARGET_NO_RESPONSE = 11


class PlcError(Exception):
    """A Modbus request to a PLC endpoint failed."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint


class PlcConnectionError(PlcError):
    """The endpoint cannot be reached, or the connection broke."""


class PlcTimeout(PlcError):
    """The endpoint did not answer within the request timeout."""


class PlcExceptionReply(PlcError):
    """The endpoint answered with a Modbus exception."""

    def __init__(self, endpoint: str, code: int, request: str) -> None:
        try:
            name = ModbusExceptionCode(code).name.lower().replace("_", " ")
        except ValueError:
            name = "unknown exception"
        super().__init__(endpoint, f"{request} answered exception {code} ({name})")
        self.code = code


class PlcProtocolError(PlcError):
    """The endpoint answered something that does not fit the request."""


class PlcOverloaded(PlcError):
    """Too many requests are already queued for the endpoint; the request was not sent."""
