"""The rollout engine: one explicit transition table and a pure ``step`` function. No I/O, no clock.

The hub keeps a `RolloutSnapshot` per rollout in its database and drives it::

    snapshot = new_rollout("r-42", plan, variants, now=time.time())
    snapshot, actions = step(snapshot, now, device_statuses)                      # on every tick / event
    snapshot, actions = step(snapshot, now, device_statuses, gate_verdict=v)      # answering RequestGate
    snapshot, actions = step(snapshot, now, device_statuses, command=Command.PAUSE)

It persists the returned snapshot (``snapshot.model_dump_json()``) and then carries out the actions
(`DeployTo`, `RollBack`, `RequestGate`, `Pause`, ...), which are plain data. ``step`` is deterministic in
its inputs, so a hub restarted from the stored snapshot continues exactly where it was; carrying out an
action twice is harmless because device handlers are idempotent.

States and the events that move between them are listed once, in `TRANSITIONS`. Operator commands that the
table does not allow in the current state raise `RolloutError`.
The package, one job per module: `states` (states, events, commands and the transition table), `inputs`
(`DeviceStatus`, the gate's verdict), `snapshot` (`RolloutSnapshot` and its records), `actions` (what the hub
is asked to do), `engine` (``step``), `status` (``summarize``), `timers` (``next_due``,
``awaiting``: when a step is due, so the hub ticks on events).

Exceptions (see `fleet.errors`)::

    FleetError
     └── RolloutError          a command that the current state does not allow, or a malformed verdict
"""

from fleet.errors import RolloutError
from fleet.rollout.actions import (
    ACTIONS_ADAPTER,
    Action,
    Deferred,
    DeployTo,
    Notice,
    Pause,
    RequestGate,
    RollBack,
    Skipped,
    StateChanged,
    dump_actions,
    load_actions,
)
from fleet.rollout.engine import StepResult, step
from fleet.rollout.inputs import DeviceStatus, GateInput, GateVerdict
from fleet.rollout.snapshot import (
    DeviceRecord,
    GateProgress,
    GateVerdictRecord,
    Phase,
    RolloutSnapshot,
    TransitionRecord,
    allowed_commands,
    new_rollout,
)
from fleet.rollout.states import ADVANCING, FINAL_STATES, TRANSITIONS, Command, Event, RolloutState
from fleet.rollout.status import PhaseCounts, RolloutStatus, WaveProgress, summarize
from fleet.rollout.timers import Awaiting, awaiting, next_due
from fleet.verdict import Verdict

__all__ = [
    "ACTIONS_ADAPTER",
    "ADVANCING",
    "FINAL_STATES",
    "TRANSITIONS",
    "Action",
    "Awaiting",
    "Command",
    "Deferred",
    "DeployTo",
    "DeviceRecord",
    "DeviceStatus",
    "Event",
    "GateInput",
    "GateProgress",
    "GateVerdict",
    "GateVerdictRecord",
    "Notice",
    "Pause",
    "Phase",
    "PhaseCounts",
    "RequestGate",
    "RollBack",
    "RolloutError",
    "RolloutSnapshot",
    "RolloutState",
    "RolloutStatus",
    "Skipped",
    "StateChanged",
    "StepResult",
    "TransitionRecord",
    "Verdict",
    "WaveProgress",
    "allowed_commands",
    "awaiting",
    "dump_actions",
    "load_actions",
    "new_rollout",
    "next_due",
    "step",
    "summarize",
]
