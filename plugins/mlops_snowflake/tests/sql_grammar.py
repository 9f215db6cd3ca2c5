"""A small parser of the documented grammar of ``CREATE ALERT`` and ``CREATE TASK`` (docs.snowflake.com,
sql-reference/sql/create-alert and create-task), so tests check the statements we send against the
grammar rather than against themselves:

    CREATE [ OR REPLACE ] ALERT [ IF NOT EXISTS ] <name>
      [ WAREHOUSE = <warehouse_name> ]
      SCHEDULE = '{ <num> MINUTE | USING CRON <expr> <time_zone> }'
      [ COMMENT = '<string_literal>' ]
      IF( EXISTS( <one SELECT, SHOW or CALL statement> ))
      THEN <action: one SQL statement>

    CREATE [ OR REPLACE ] TASK [ IF NOT EXISTS ] <name>
      [ WAREHOUSE = <name> | USER_TASK_MANAGED_INITIAL_WAREHOUSE_SIZE = '<size>' ]
      [ SCHEDULE = '{ <num> { HOURS | MINUTES | SECONDS } | USING CRON <expr> <time_zone> }' ]
      [ <property> = <value> ... ] [ COMMENT = '<string_literal>' ] [ AFTER <name> [, ...] ] [ WHEN <expr> ]
    AS <one SQL statement>

Model monitor table functions in a condition are checked for their argument count and granularity
(``'<n> DAY'``, ``'<n> WEEK'``, ``'<n> MONTH'``, ``'<n> QUARTER'``, ``'<n> YEAR'``, or ``'ALL'``).
``parse_alert`` / ``parse_task`` raise ``SyntaxError`` naming what was expected.
"""

from __future__ import annotations

import re

TOKEN = re.compile(r"""\s*(?:(?P<string>'(?:[^'\\]|\\.|'')*')|(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
                       |(?P<ident>[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)*|"[^"]+")
                       |(?P<op><=|>=|<>|!=|[(),;=<>*+\-/!]))""", re.VERBOSE)
STATEMENT_STARTS = {"SELECT", "SHOW", "CALL", "INSERT", "MERGE", "UPDATE", "DELETE", "EXECUTE", "WITH"}
GRANULARITY = re.compile(r"^'(\d+ (DAY|WEEK|MONTH|QUARTER|YEAR)|ALL)'$")
MONITOR_FUNCTIONS = {  # name -> (argument count, index of the granularity argument)
    "MODEL_MONITOR_PERFORMANCE_METRIC": (5, 2),
    "MODEL_MONITOR_DRIFT_METRIC": (6, 3),
    "MODEL_MONITOR_STAT_METRIC": (6, 3),
}
ALERT_SCHEDULE = re.compile(r"^'(\d+ MINUTE|USING CRON (\S+ ){5}\S+)'$")
TASK_SCHEDULE = re.compile(r"^'(\d+ (HOURS|MINUTES|SECONDS)|USING CRON (\S+ ){5}\S+)'$")


def tokens(sql: str) -> list[tuple[str, str]]:
    out, position, sql = [], 0, sql.rstrip().rstrip(";")
    while position < len(sql):
        match = TOKEN.match(sql, position)
        if not match or match.end() == position:
            if sql[position:].strip() == "":
                break
            raise SyntaxError(f"unexpected character at {sql[position:position + 20]!r}")
        kind = match.lastgroup
        text = match.group(kind)
        out.append((kind, text.upper() if kind == "ident" else text))
        position = match.end()
    return out


class _Parser:
    def __init__(self, sql):
        self.tokens, self.i = tokens(sql), 0

    def peek(self, offset=0):
        index = self.i + offset
        return self.tokens[index] if index < len(self.tokens) else ("end", "")

    def accept(self, text):
        if self.peek()[1] == text:
            self.i += 1
            return True
        return False

    def expect(self, text):
        if not self.accept(text):
            raise SyntaxError(f"expected {text!r}, found {self.peek()[1]!r} (token {self.i})")

    def take(self, kind):
        token = self.peek()
        if token[0] != kind:
            raise SyntaxError(f"expected a {kind}, found {token[1]!r} (token {self.i})")
        self.i += 1
        return token[1]

    def header(self, kind):
        self.expect("CREATE")
        if self.accept("OR"):
            self.expect("REPLACE")
        self.expect(kind)
        if self.accept("IF"):
            self.expect("NOT")
            self.expect("EXISTS")
        return self.take("ident")

    def balanced_until(self, stop_at_depth_zero):
        """Tokens up to (not including) an unmatched ``)`` or, at depth 0, a token in ``stop_at_depth_zero``."""
        start, depth = self.i, 0
        while self.peek()[0] != "end":
            text = self.peek()[1]
            if depth == 0 and text in stop_at_depth_zero:
                break
            if text == "(":
                depth += 1
            elif text == ")":
                if depth == 0:
                    break
                depth -= 1
            elif text == ";":
                raise SyntaxError("more than one statement")
            self.i += 1
        if depth:
            raise SyntaxError("unbalanced parentheses")
        return self.tokens[start:self.i]

    def statement(self, what):
        body = self.balanced_until(set())
        if not body or body[0][1] not in STATEMENT_STARTS:
            raise SyntaxError(f"{what} must be one SQL statement, found {body[:1]}")
        return body


def _check_monitor_functions(body):
    for index, (kind, text) in enumerate(body):
        if kind == "ident" and text in MONITOR_FUNCTIONS:
            count, granularity_at = MONITOR_FUNCTIONS[text]
            if body[index + 1][1] != "(":
                raise SyntaxError(f"{text} must be called")
            arguments, current, depth = [], [], 0
            for token in body[index + 2:]:
                if token[1] == "(":
                    depth += 1
                elif token[1] == ")":
                    if depth == 0:
                        break
                    depth -= 1
                if token[1] == "," and depth == 0:
                    arguments.append(current)
                    current = []
                else:
                    current.append(token)
            arguments.append(current)
            if len(arguments) != count:
                raise SyntaxError(f"{text} takes {count} arguments, got {len(arguments)}")
            granularity = arguments[granularity_at]
            if len(granularity) != 1 or not GRANULARITY.match(granularity[0][1].upper()):
                raise SyntaxError(f"{text}: granularity must be '<n> DAY|WEEK|MONTH|QUARTER|YEAR' or 'ALL', "
                                  f"got {' '.join(t for _, t in granularity)}")


def parse_alert(sql: str) -> dict:
    """Parse one ``CREATE ALERT``; returns its parts (name, properties, condition and action tokens)."""
    p = _Parser(sql)
    name = p.header("ALERT")
    properties = {}
    while p.peek()[1] in ("WAREHOUSE", "SCHEDULE", "COMMENT"):
        key = p.take("ident")
        p.expect("=")
        properties[key] = p.take("string" if key != "WAREHOUSE" else "ident")
    if "SCHEDULE" not in properties or not ALERT_SCHEDULE.match(properties["SCHEDULE"].upper()):
        raise SyntaxError(f"SCHEDULE must be '<n> MINUTE' or 'USING CRON <expr> <time_zone>', got {properties.get('SCHEDULE')}")
    p.expect("IF")
    p.expect("(")
    p.expect("EXISTS")
    p.expect("(")
    condition = p.statement("the condition")
    if condition[0][1] not in ("SELECT", "SHOW", "CALL"):
        raise SyntaxError("the condition must be a SELECT, SHOW or CALL")
    p.expect(")")
    p.expect(")")
    p.expect("THEN")
    action = p.statement("the action")
    if p.peek()[0] != "end":
        raise SyntaxError(f"unexpected {p.peek()[1]!r} after the action")
    _check_monitor_functions(condition)
    return {"name": name, "properties": properties, "condition": condition, "action": action}


TASK_PROPERTIES = {"WAREHOUSE", "USER_TASK_MANAGED_INITIAL_WAREHOUSE_SIZE", "SCHEDULE", "ALLOW_OVERLAPPING_EXECUTION",
                   "USER_TASK_TIMEOUT_MS", "SUSPEND_TASK_AFTER_NUM_FAILURES", "ERROR_INTEGRATION", "COMMENT",
                   "FINALIZE", "TASK_AUTO_RETRY_ATTEMPTS", "USER_TASK_MINIMUM_TRIGGER_INTERVAL_IN_SECONDS",
                   "TARGET_COMPLETION_INTERVAL", "SERVERLESS_TASK_MIN_STATEMENT_SIZE",
                   "SERVERLESS_TASK_MAX_STATEMENT_SIZE"}


def parse_task(sql: str) -> dict:
    """Parse one ``CREATE TASK``; returns its name, properties and body tokens."""
    p = _Parser(sql)
    name = p.header("TASK")
    properties = {}
    while p.peek()[1] in TASK_PROPERTIES:
        key = p.take("ident")
        if key in properties:
            raise SyntaxError(f"{key} given twice")
        p.expect("=")
        kind, value = p.peek()
        if kind not in ("string", "number", "ident"):
            raise SyntaxError(f"{key} needs a value, found {value!r}")
        p.i += 1
        properties[key] = value
    if "WAREHOUSE" in properties and "USER_TASK_MANAGED_INITIAL_WAREHOUSE_SIZE" in properties:
        raise SyntaxError("WAREHOUSE and USER_TASK_MANAGED_INITIAL_WAREHOUSE_SIZE exclude each other")
    if "SCHEDULE" in properties and not TASK_SCHEDULE.match(properties["SCHEDULE"].upper()):
        raise SyntaxError(f"SCHEDULE must be '<n> MINUTES|HOURS|SECONDS' or 'USING CRON <expr> <tz>', "
                          f"got {properties['SCHEDULE']}")
    if p.accept("AFTER"):
        p.take("ident")
        while p.accept(","):
            p.take("ident")
    if p.accept("WHEN"):
        p.balanced_until({"AS"})
    p.expect("AS")
    body = p.statement("the task body")
    if p.peek()[0] != "end":
        raise SyntaxError(f"unexpected {p.peek()[1]!r} after the task body")
    return {"name": name, "properties": properties, "body": body}
