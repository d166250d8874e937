"""The device update state machine: one handler per state, one transition table (after Mender's client).

::

    IDLE --start--> DOWNLOAD --ok--> VERIFY --ok--> INSTALL --ok--> HEALTH_CHECK --ok--> COMMIT --ok--> DONE
                       |fail           |fail          |fail             |fail              |fail
                       v               v              v                 v                  v
                     FAILED          FAILED         FAILED           ROLLBACK <-----------+
                                                                        |ok / fail
                                                                        v
                                                                      FAILED

Each state is one handler class in its own module (`Download`, `Verify`, `Install`, `HealthCheck`,
`Commit`, `Rollback`), given the persisted `UpdateRecord` and only the services it needs, returning an
`Outcome` (an `AgentError` it raises, or a disk error, is a ``FAIL`` with the reason). `Updater` saves the
record before entering every state and every handler is idempotent, so killing the agent anywhere and
starting it again resumes the state it was in, or reverts; a state that cannot be saved (full disk) is not
entered, the update fails with the reason instead. The active model keeps serving throughout and is
replaced only at COMMIT, after the candidate passed its health check; ROLLBACK puts back what COMMIT
switched.
"""

from agent.update.machine import Reporter, Updater
from agent.update.table import TERMINAL, TRANSITIONS, Event, Handler, Outcome, next_state, run_handler

__all__ = ["TERMINAL", "TRANSITIONS", "Event", "Handler", "Outcome", "Reporter", "Updater", "next_state", "run_handler"]
