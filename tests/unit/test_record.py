"""clusterip.record against collections.namedtuple: the same behaviour where
the agent relies on it, and the same repr (memo keys are reprs of records)."""

import collections
import copy
import pickle

import pytest

from clusterip.record import record

Point = record("Point", "x y")
Reference = collections.namedtuple("Point", "x y")


def test_built_by_position_or_keyword_and_read_by_name():
    for point in (Point(1, 2), Point(1, y=2), Point(x=1, y=2), Point(y=2, x=1)):
        assert (point.x, point.y) == (1, 2)
        assert tuple(point) == (1, 2) and point == (1, 2)
        x, y = point
        assert (x, y) == (1, 2)


def test_repr_and_fields_as_a_namedtuple():
    assert repr(Point(1, "a")) == repr(Reference(1, "a")) == "Point(x=1, y='a')"
    assert Point._fields == Reference._fields == ("x", "y")


def test_a_subclass_keeps_its_name_in_repr():
    class Named(record("Named", "a")):
        __slots__ = ()

    assert repr(Named(3)) == "Named(a=3)"
    assert not hasattr(Named(3), "__dict__")


def test_replace_returns_a_new_record_of_the_same_class():
    point = Point(1, 2)
    assert point._replace(y=5) == Point(1, 5) and point == Point(1, 2)
    assert type(point._replace(x=0)) is Point
    with pytest.raises(TypeError, match="no field z"):
        point._replace(z=1)


@pytest.mark.parametrize("args, kwargs", [((1,), {}), ((1, 2, 3), {}), ((1,), {"x": 1}),
                                          ((), {"x": 1}), ((1, 2), {"z": 3})])
def test_wrong_arguments_are_a_type_error(args, kwargs):
    with pytest.raises(TypeError):
        Point(*args, **kwargs)


def test_immutable_hashable_copyable_picklable():
    point = Point(1, 2)
    with pytest.raises(AttributeError):
        point.x = 3
    assert hash(point) == hash((1, 2)) and {point: 1}[Point(1, 2)] == 1
    assert copy.copy(point) == point and type(copy.deepcopy(point)) is Point
    assert pickle.loads(pickle.dumps(Global(1, 2))) == Global(1, 2)


Global = record("Global", "a b")
Global.__module__ = __name__  # pickle finds classes by module and name
