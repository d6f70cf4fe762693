"""Loading barriers.toml: the good file, and every wrong file rejected naming line and field."""

from pathlib import Path

import pytest

from plc.config import RegisterMapError, load_register_map, parse_register_map
from plc.registers import Point, Table, barrier_v1_points

pytestmark = pytest.mark.unit

GOOD = """\
stride = 8

[[endpoints]]
name = "north"
host = "10.0.0.5"
port = 5020

[[endpoints]]
name = "south"
host = "10.0.0.6"
unit_id = 3
max_read_registers = 60

[[barriers]]
id = 1
name = "Entry"
endpoint = "north"
slot = 0

[[barriers]]
id = 2
endpoint = "north"
slot = 1

[[barriers]]
id = 7
name = "Odd PLC"
endpoint = "south"
slot = 0
stride = 20

[barriers.addresses]
state = { table = "holding_register", address = 100 }
position = 13
occupied = { table = "coil", address = 50 }
"""


def test_good_file() -> None:
    register_map = parse_register_map(GOOD)
    north, south = register_map.endpoints
    assert (north.host, north.port, north.unit_id) == ("10.0.0.5", 5020, 1)
    assert (south.port, south.unit_id, south.max_read_registers) == (502, 3, 60)
    assert [b.id for b in register_map.barriers] == [1, 2, 7]
    assert register_map.barrier(2).points == barrier_v1_points(1)
    assert register_map.barrier(2).name == "Barrier 2"
    odd = register_map.barrier(7).points
    assert odd.state == Point(Table.HOLDING_REGISTER, 100)
    assert odd.position == Point(Table.INPUT_REGISTER, 13)
    assert odd.occupied == Point(Table.COIL, 50)
    assert odd.fault == Point(Table.INPUT_REGISTER, 1)
    assert [b.id for b in register_map.barriers_on("north")] == [1, 2]


def test_the_shipped_example_loads() -> None:
    example = Path(__file__).parents[2] / "barriers.toml"
    assert len(load_register_map(example).barriers) == 4


def edit(old: str, new: str, count: int = 1) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, count)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            edit('name = "Entry"', 'name = "Entry"\ncolour = "red"'),
            r"^x\.toml:17: barriers\[0\]\.colour: .*unknown field `colour`",
        ),
        (edit("id = 2", "id = 1"), r"^x\.toml:21: barriers\[1\]\.id: duplicate barrier id 1$"),
        (
            edit("slot = 1", "slot = 0"),
            r"^x\.toml:23: barriers\[1\]\.slot: coil 0 on endpoint 'north' is used by both barrier 1 open_request and barrier 2 open_request$",
        ),
        (
            edit("position = 13", "position = 1"),
            r"^x\.toml:34: barriers\[2\]\.addresses\.position: input_register 1 on endpoint 'south' is used by both barrier 7 fault and barrier 7 position$",
        ),
        (
            edit("position = 13", "position = 70000"),
            r"^x\.toml:34: barriers\[2\]\.addresses\.position: Expected `int` <= 65535",
        ),
        (
            edit("slot = 1", "slot = 9000"),
            r"^x\.toml:23: barriers\[1\]\.slot: address 72000 of open_request is out of range 0\.\.65535$",
        ),
        (
            edit('endpoint = "south"', 'endpoint = "west"'),
            r"^x\.toml:28: barriers\[2\]\.endpoint: unknown endpoint 'west' \(defined: north, south\)$",
        ),
        (
            edit('name = "south"', 'name = "north"'),
            r"^x\.toml:9: endpoints\[1\]\.name: duplicate endpoint 'north'$",
        ),
        (
            edit("port = 5020", "port = 70000"),
            r"^x\.toml:6: endpoints\[0\]\.port: Expected `int` <= 65535$",
        ),
        (
            edit("port = 5020", 'port = "5020"'),
            r"^x\.toml:6: endpoints\[0\]\.port: Expected `int`, got `str`$",
        ),
        (
            edit("unit_id = 3", "unit_id = 256"),
            r"^x\.toml:11: endpoints\[1\]\.unit_id: Expected `int` <= 255$",
        ),
        (
            edit("max_read_registers = 60", "max_read_registers = 126"),
            r"endpoints\[1\]\.max_read_registers: Expected `int` <= 125$",
        ),
        (
            edit(
                'state = { table = "holding_register", address = 100 }',
                'state = { table = "coil", address = 100 }',
            ),
            r"^x\.toml:33: barriers\[2\]\.addresses\.state: state cannot live in table coil \(use holding_register or input_register\)$",
        ),
        (
            edit(
                'state = { table = "holding_register", address = 100 }',
                'state = { table = "eeprom", address = 100 }',
            ),
            r"barriers\[2\]\.addresses\.state\.table: Invalid enum value 'eeprom'$",
        ),
        (edit("id = 7", "id = 0"), r"^x\.toml:26: barriers\[2\]\.id: Expected `int` >= 1$"),
        (
            edit("slot = 0\n", "", 1),
            r"^x\.toml:14: barriers\[0\]: Object missing required field `slot`$",
        ),
        (
            GOOD.replace("[[endpoints]]", "[[endpoint]]"),
            r"^x\.toml:3: endpoint: Object contains unknown field `endpoint`$",
        ),
        ("stride = 8\n[[barriers]\n", r"^x\.toml: not valid TOML"),
        (
            edit("stride = 8", 'profile = "barrier-v2"'),
            r"^x\.toml:1: profile: Invalid enum value 'barrier-v2'$",
        ),
    ],
)
def test_wrong_files_are_rejected_naming_line_and_field(text: str, message: str) -> None:
    with pytest.raises(RegisterMapError, match=message):
        parse_register_map(text, source="x.toml")


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(RegisterMapError, match="cannot read the register map: No such file"):
        load_register_map(tmp_path / "nope.toml")


def test_a_file_that_is_not_utf8_says_where(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(GOOD.replace('name = "Entry"', 'name = "Entr\xe9e"').encode("latin-1"))
    line = GOOD.split('name = "Entry"')[0].count("\n") + 1
    with pytest.raises(RegisterMapError, match=rf"latin1.toml:{line}: .*not UTF-8"):
        load_register_map(path)


def test_the_readme_example_loads() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    register_map = parse_register_map(example, source="README.md")
    delivery = register_map.barrier(20).points
    assert delivery.state == Point(Table.HOLDING_REGISTER, 400)
    assert delivery.open_request == Point(Table.COIL, 100)
    assert register_map.barrier(1).points == barrier_v1_points(0)


def test_a_dumped_map_loads_back_equal() -> None:
    from plc.config import dump_register_map

    register_map = parse_register_map(GOOD.replace('name = "Entry"', 'name = "Entry \\"A\\""'))
    assert parse_register_map(dump_register_map(register_map)) == register_map
