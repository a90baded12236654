"""The filter guard: a `--where` condition, from the CLI, the Python API or an HTTP request alike, parsed by DuckDB's
own parser and allowed only when every node of it is on a list: column references to the item columns (and to the store's own
metadata columns, store/metadata.py, which the caller names: only those the store has), literals,
comparisons, AND/OR/NOT, IN, BETWEEN, IS NULL, CASE, casts to plain types and a named set of scalar functions
that read nothing but their arguments and build no lists or long strings.

What runs is not the user's text but DuckDB's rendering of the checked tree (so a comment, a stray parenthesis or
a second statement cannot survive the check), and it runs on a connection of its own with external access off,
the configuration locked, a memory limit and a time limit (see filter_run.py).
"""
from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import dataclass

import duckdb

from featstore.errors import FeatstoreError

MAX_LENGTH = 1000          # characters of a condition
MAX_NODES = 200            # expression nodes (an IN list of ~190 values fits)
MAX_DEPTH = 24             # nesting

COLUMNS = ("item_id", "path", "hash", "size", "mtime", "width", "height", "updated_at", "label", "split", "text")
META_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")     # a metadata column's name (store/metadata.py)
RESERVED = COLUMNS + ("status", "error", "vector", "vec_id", "copies", "meta", "rank", "score", "item", "_passes",
                      "tag", "tags", "excluded")    # (the last three: names a new metadata column cannot take)
CURATION_NAMES = ("tag", "tags", "excluded")
TAG = "tag"                # an item's tags (store/edits.py): a set, so only membership forms (see _tag_form)
TAG_FORMS = "tag = 'x', tag <> 'x', tag IN ('x', 'y'), tag NOT IN (...), tag IS NULL (no tag), tag IS NOT NULL"

OPERATORS = {"+", "-", "*", "/", "//", "%", "^", "**", "||",
             "~~", "!~~", "~~*", "!~~*", "~~~", "!~~~",                  # LIKE, NOT LIKE, ILIKE, NOT ILIKE, GLOB
             "like_escape", "not_like_escape", "ilike_escape", "not_ilike_escape"}
FUNCTIONS = {
    # text: each result at most as long as its arguments together
    "lower", "upper", "lcase", "ucase", "length", "strlen", "substr", "substring", "left", "right", "prefix",
    "suffix", "starts_with", "ends_with", "contains", "instr", "strpos", "position", "trim", "ltrim", "rtrim",
    "reverse", "split_part", "concat", "regexp_matches", "regexp_full_match", "regexp_extract",
    # numbers
    "abs", "round", "floor", "ceil", "ceiling", "trunc", "sign", "sqrt", "cbrt", "ln", "log", "log2", "log10", "exp",
    "pow", "power", "greatest", "least", "isnan", "isinf", "isfinite",
    # times (updated_at is a timestamp, mtime seconds since 1970)
    "year", "month", "day", "hour", "minute", "second", "dayofweek", "dayofyear", "week", "quarter", "date_part",
    "datepart", "date_trunc", "datetrunc", "date_diff", "datediff", "epoch", "to_timestamp", "make_date",
    "current_date", "now", "today",
    # nulls
    "ifnull", "nullif",
    # LIKE/ILIKE ... ESCAPE, as rendered
    "like_escape", "not_like_escape", "ilike_escape", "not_ilike_escape",
}
TYPES = {"VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR", "BOOLEAN", "BOOL", "TINYINT", "SMALLINT", "INTEGER", "INT",
         "INT4", "INT8", "BIGINT", "HUGEINT", "UBIGINT", "UINTEGER", "DOUBLE", "FLOAT", "FLOAT4", "FLOAT8", "REAL",
         "DECIMAL", "NUMERIC", "DATE", "TIME", "TIMESTAMP", "DATETIME", "INTERVAL"}
OPERATOR_NODES = {"OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "COMPARE_IN", "COMPARE_NOT_IN",
                  "OPERATOR_COALESCE"}
WHAT_IT_IS = {"SUBQUERY": "a subquery", "WINDOW": "a window function", "LAMBDA": "a lambda",
              "STAR": "* or COLUMNS(...)", "PARAMETER": "a parameter ($1, ?)", "COLLATE": "COLLATE (use lower())",
              "POSITIONAL_REFERENCE": "a positional reference (#1)", "FUNCTION_REF": "a table function",
              "list_value": "a list", "struct_pack": "a struct", "map": "a map", "repeat": "repeat (builds long "
              "strings)", "lpad": "lpad (builds long strings)", "rpad": "rpad (builds long strings)",
              "range": "range (builds a list)", "generate_series": "generate_series (builds a list)",
              "replace": "replace (builds long strings)", "printf": "printf (builds long strings)",
              "format": "format (builds long strings)"}
_SOME_FUNCTIONS = "lower, upper, length, contains, starts_with, regexp_matches, abs, round, year, date_trunc"
_PREFIX = "SELECT 1 FROM item WHERE "


@dataclass(frozen=True)
class ItemFilter:
    """A checked condition: `text` as the user gave it, `sql` the rendering of its checked tree that runs."""

    text: str
    sql: str
    columns: frozenset = frozenset()        # the item columns it reads

    def __str__(self) -> str:
        return self.text


def check_where(where: "str | ItemFilter", extra_columns=()) -> ItemFilter:
    """The condition as an ItemFilter when every part of it is allowed (the item columns and the store's own
    metadata columns `extra_columns`); else FeatstoreError saying which part is not and why (one line)."""
    if isinstance(where, ItemFilter):
        return where
    if not isinstance(where, str):
        raise FeatstoreError(f"where: a condition is text (SQL), not {type(where).__name__}")
    return _checked(where, tuple(extra_columns))


@functools.lru_cache(maxsize=256)
def _checked(where: str, extra_columns: tuple) -> ItemFilter:
    """check_where for a text, remembered: a condition a page or a loop sends again is not parsed again."""
    allowed = COLUMNS + tuple(n for n in metadata_names(extra_columns) if n != TAG)   # `tag`: the item's tags
    if not where.strip():
        raise FeatstoreError("where: the condition is empty")
    if len(where) > MAX_LENGTH:
        raise FeatstoreError(f"where: longer than {MAX_LENGTH} characters")
    if "\x00" in where:
        raise FeatstoreError("where: holds a NUL character")
    tree = _parse(_PREFIX + "(" + where + "\n)")
    _check_select(tree, where)
    node = tree["where_clause"]
    columns: set = set()
    _walk(node, 0, [0], columns, allowed)
    if TAG in columns:         # membership in the tags table, written by featstore, not by the user
        tree["where_clause"] = _tags_rewritten(node)
    sql = _render(tree)
    if _strip(_parse(sql)) != _strip(tree):        # the rendering must be the tree that was checked
        raise FeatstoreError("where: the condition cannot be rendered back as checked; simplify it")
    return ItemFilter(where, "(" + sql[len(_PREFIX):] + ")", frozenset(columns))


def metadata_names(names) -> tuple:
    """A store's metadata column names, each a plain lower-case name that is no item column (else one error)."""
    names = tuple(names)
    for name in names:
        if not isinstance(name, str) or not META_NAME.fullmatch(name) or \
                (name in RESERVED and name not in CURATION_NAMES):        # a store's older columns of those names
            raise FeatstoreError(f"where: {name!r} cannot be a metadata column")
    return names


def allowed_text() -> str:
    """One line for docs and errors: what a condition may use."""
    return (f"columns {', '.join(COLUMNS)}; {TAG_FORMS}; literals; "
            "= <> < > <= >= AND OR NOT IN BETWEEN LIKE ILIKE GLOB IS NULL "
            "CASE CAST; the functions " + ", ".join(sorted(FUNCTIONS)))


# ---- parsing and rendering through DuckDB's own parser (an in-memory connection that touches no file) ----------
_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def _duck(sql: str, arg: str) -> str:
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect(":memory:", config={"enable_external_access": False,
                                                         "autoload_known_extensions": False,
                                                         "autoinstall_known_extensions": False,
                                                         "lock_configuration": True, "threads": 1})
        return _parser.execute(sql, [arg]).fetchone()[0]


def _parse(sql: str) -> dict:
    out = json.loads(_duck("SELECT json_serialize_sql(?::VARCHAR)", sql))
    if out.get("error"):
        raise FeatstoreError(f"where: {str(out.get('error_message', 'not valid SQL')).splitlines()[0]}")
    statements = out.get("statements") or []
    if len(statements) != 1:
        raise FeatstoreError("where: one condition only, not several statements")
    return statements[0]["node"]


def _render(tree: dict) -> str:
    doc = json.dumps({"error": False, "statements": [{"node": tree, "named_param_map": []}]})
    return _duck("SELECT json_deserialize_sql(?::JSON)", doc).rstrip(";")


_TEMPLATE: dict | None = None


def _check_select(tree: dict, where: str) -> None:
    """The statement around the condition must be exactly `SELECT 1 FROM item WHERE (...)`: nothing of the text
    may have reached past the parentheses (a UNION, an ORDER BY, another table)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = _strip(_parse(_PREFIX + "(true)")) | {"where_clause": None}
    if tree.get("type") != "SELECT_NODE" or _strip(tree) | {"where_clause": None} != _TEMPLATE:
        raise FeatstoreError("where: one condition over the item's columns only (no set operations, no clauses "
                             "after it, no closing parenthesis of its own)")


def _strip(node):
    """The tree without what differs between two texts of the same expression: positions, and whether a
    function was written as an operator (`a ILIKE b ESCAPE c` renders as ilike_escape(a, b, c))."""
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items()
                if k not in ("query_location", "query_location_length", "is_operator")}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _walk(node: dict, depth: int, count: list, columns: set, allowed: tuple) -> None:
    """Check one expression node and its children, counting nodes and collecting the columns read."""
    count[0] += 1
    if depth > MAX_DEPTH:
        raise FeatstoreError(f"where: nested more than {MAX_DEPTH} deep")
    if count[0] > MAX_NODES:
        raise FeatstoreError(f"where: more than {MAX_NODES} parts")
    kind = node.get("class")
    children: list = []
    if _tag_form(node) is not None:
        columns.add(TAG)
        return
    if kind == "COLUMN_REF":
        names = [n.lower() for n in node.get("column_names", [])]
        if names[:1] == ["item"] and len(names) == 2:
            names = names[1:]
        if names == [TAG] and TAG not in allowed:
            raise FeatstoreError(f"where: an item's tags are a set: use {TAG_FORMS}")
        if len(names) != 1 or names[0] not in allowed:
            name = ".".join(node.get("column_names", []))
            why = "not filtered (vectors are what is searched)" if names == ["vector"] else "not an item column"
            raise FeatstoreError(f"where: {name!r} is {why}; the columns are {', '.join(allowed)}")
        columns.add(names[0])
    elif kind == "CONSTANT":
        pass
    elif kind in ("COMPARISON",):
        children = [node["left"], node["right"]]
    elif kind == "CONJUNCTION":
        children = node["children"]
    elif kind == "OPERATOR":
        if node.get("type") not in OPERATOR_NODES:
            raise FeatstoreError(f"where: {node.get('type', '?').lower().replace('_', ' ')} is not allowed")
        children = node["children"]
    elif kind == "BETWEEN":
        children = [node["input"], node["lower"], node["upper"]]
    elif kind == "CASE":
        for check in node["case_checks"]:
            children += [check["when_expr"], check["then_expr"]]
        children.append(node["else_expr"])
    elif kind == "CAST":
        _check_type(node.get("type_expr") or {})
        children = [node["child"]]
    elif kind == "FUNCTION":
        children = _function_arguments(node)
    else:
        raise FeatstoreError(f"where: {WHAT_IT_IS.get(kind, str(kind).lower())} is not allowed in a condition")
    for child in children:
        if child is not None:
            _walk(child, depth + 1, count, columns, allowed)


def _function_arguments(node: dict) -> list:
    name = str(node.get("function_name", "")).lower()
    allowed = name in OPERATORS if node.get("is_operator") else name in FUNCTIONS
    if not allowed or node.get("schema") or node.get("catalog"):
        what = WHAT_IT_IS.get(name, f"function {name!r}")
        raise FeatstoreError(f"where: {what} is not allowed in a condition (allowed: {_SOME_FUNCTIONS}, ...; "
                             "the full list is in docs/search.md)")
    if node.get("filter") or node.get("distinct") or node.get("export_state") or \
            (node.get("order_bys") or {}).get("orders"):
        raise FeatstoreError(f"where: {name}(...) with DISTINCT, ORDER BY or FILTER is an aggregate; not allowed")
    return [a["expression"] for a in node.get("arguments", [])]


def _check_type(type_expr: dict) -> None:
    name = str(type_expr.get("type_name", "")).upper()
    if name not in TYPES or type_expr.get("schema") or type_expr.get("catalog"):
        raise FeatstoreError(f"where: CAST to {name or '?'} is not allowed; cast to one of {', '.join(sorted(TYPES))}")
    for child in type_expr.get("children") or []:
        if child.get("class") != "CONSTANT":
            raise FeatstoreError(f"where: the type {name}(...) takes numbers only")


# ---- tags: `tag = 'x'` and its kin become membership tests on the tags table ------------------------------------
def _is_tag(node: dict) -> bool:
    names = [n.lower() for n in node.get("column_names", [])] if node.get("class") == "COLUMN_REF" else []
    return names in ([TAG], ["item", TAG])


def _tag_text(node: dict) -> str:
    literal = node.get("literal") or {}
    if node.get("class") != "CONSTANT" or literal.get("kind") != "STRING":
        raise FeatstoreError(f"where: a tag is compared with quoted text, e.g. tag = 'x' ({TAG_FORMS})")
    return literal["text"]


def _tag_form(node: dict) -> tuple[str, list[str]] | None:
    """(how, tags) when `node` is one of the tag forms: how 'has' (any of the tags), 'lacks' (none of them), 'any'
    (some tag), 'none' (no tag); else None."""
    kind, op = node.get("class"), node.get("type")
    if kind == "COMPARISON" and op in ("COMPARE_EQUAL", "COMPARE_NOTEQUAL"):
        left, right = node["left"], node["right"]
        if _is_tag(right) and not _is_tag(left):
            left, right = right, left
        if _is_tag(left):
            return ("has" if op == "COMPARE_EQUAL" else "lacks"), [_tag_text(right)]
    elif kind == "OPERATOR" and op in ("COMPARE_IN", "COMPARE_NOT_IN") and node["children"] and \
            _is_tag(node["children"][0]):
        return ("has" if op == "COMPARE_IN" else "lacks"), [_tag_text(c) for c in node["children"][1:]]
    elif kind == "OPERATOR" and op in ("OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL") and _is_tag(node["children"][0]):
        return ("none" if op == "OPERATOR_IS_NULL" else "any"), []
    return None


def _tags_rewritten(node):
    """The checked tree with each tag form replaced by its test on the tags table (the tree of the SQL text that
    tags_sql builds, parsed by DuckDB like any condition)."""
    if isinstance(node, list):
        return [_tags_rewritten(v) for v in node]
    if not isinstance(node, dict):
        return node
    form = node.get("class") and _tag_form(node)
    if form:
        return _parse(_PREFIX + "(" + tags_sql(*form) + ")")["where_clause"]
    return {k: _tags_rewritten(v) for k, v in node.items()}


def tags_sql(how: str, tags: list[str]) -> str:
    """SQL testing the row `item` against its tags: has one of `tags`, lacks all of them, has some, has none."""
    listed = ", ".join("'" + t.replace("'", "''") + "'" for t in tags)
    some = f"item.path IN (SELECT tags.path FROM tags{f' WHERE tags.tag IN ({listed})' if tags else ''})"
    return some if how in ("has", "any") else f"NOT ({some})"
