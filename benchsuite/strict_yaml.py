"""A strict YAML reader for suite files, which travel between people.

PyYAML's safe loader still expands aliases (a 1.6 KB "billion laughs" file becomes gigabytes),
nests without bound and keeps the last of two equal keys without a word. Suites need none of
that: aliases are refused, nesting is bounded and a repeated key is an error naming both lines.
"""

from __future__ import annotations

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent

MAX_DEPTH = 32  # a suite nests 5 deep (tasks[0].classes[0][1]); this leaves room and stops bombs


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, with bounded nesting and without silent duplicate keys."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise ConstructorError(
                None, None,
                f"aliases (*{event.anchor}) are not allowed in suite files; write the value out",
                event.start_mark,
            )  # fmt: skip
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConstructorError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        """A value its tag cannot read (`!!int x`, `!!timestamp x`) is a YAML error with a line,
        not the constructor's ValueError or AttributeError (the fuzzed suites found those)."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as error:
            shown = node.value if isinstance(node.value, str) else type(node.value).__name__
            raise ConstructorError(
                None, None, f"{node.tag.rpartition(':')[2] or node.tag} cannot read {str(shown)[:40]!r} ({type(error).__name__})", node.start_mark
            ) from None

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not key_node.start_mark:
                    raise ConstructorError(
                        None, None,
                        f"duplicate key {key!r} (lines {first.line + 1} and {key_node.start_mark.line + 1})",
                        key_node.start_mark,
                    )  # fmt: skip
        return super().construct_mapping(node, deep=deep)


def load(text: str):
    """The document in `text`, read strictly (raises yaml.YAMLError with a line)."""
    return yaml.load(text, Loader=StrictLoader)  # StrictLoader is a SafeLoader
