"""Barrier PLC simulator: pymodbus servers that behave like the barrier PLCs of a register map."""

from simulator.control import ControlServer
from simulator.physics import Command, Fault
from simulator.server import LinkFaults, LinkMode, PlcListenError
from simulator.simulation import Simulator, UnknownBarrierError, UnknownEndpointError

__all__ = [
    "Command",
    "ControlServer",
    "Fault",
    "LinkFaults",
    "LinkMode",
    "PlcListenError",
    "Simulator",
    "UnknownBarrierError",
    "UnknownEndpointError",
]
