"""`raftlog status --check`: from the members' status answers, one verdict line and an exit status for scripts.

Exit statuses (2 stays click's usage error):
- OK (0): a member answers as leader in the highest term any member answers with, and a quorum
  of the configuration's voters answers (the leader's configuration: during a joint change a
  majority of the old voters and one of the new, dissertation 4.3; the members asked when it
  names none).
- UNHEALTHY (1): some member answers, but there is no such leader or no such quorum.
- NO_ANSWER (3): no member answers.
"""
from __future__ import annotations

from typing import Mapping, Optional

OK, UNHEALTHY, NO_ANSWER = 0, 1, 3


def verdict(answers: Mapping[str, Optional[dict]]) -> tuple[int, str]:
    """(exit status, one line) for `answers`: address asked -> its status (None: no answer)."""
    answered = {address: st for address, st in answers.items() if st is not None}
    if not answered:
        return NO_ANSWER, f"no member answers (asked {len(answers)})"
    term = max(st.get("term") or 0 for st in answered.values())
    leaders = [st for st in answered.values() if st.get("role") == "leader" and st.get("term") == term]
    if not leaders:
        return UNHEALTHY, f"no leader in term {term} ({len(answered)} of {len(answers)} members answer)"
    leader = leaders[0]
    voters = {m["id"] for m in leader.get("member_table") or [] if m.get("voter")}
    if voters:
        up = {st.get("id") for st in answered.values()} & voters
        total = len(voters)
    else:
        up, total = set(answered), len(answers)
    if len(up) * 2 <= total:
        return UNHEALTHY, (f"leader {leader.get('id')} in term {term}, but only {len(up)} of {total} voters "
                           f"answer (a quorum is {total // 2 + 1})")
    outgoing = set(leader.get("voters_outgoing") or ())
    if outgoing:
        incoming = set(leader.get("voters") or ())
        ids = {st.get("id") for st in answered.values()}
        for half, name in ((incoming, "new"), (outgoing, "old")):
            if len(ids & half) * 2 <= len(half):
                return UNHEALTHY, (f"leader {leader.get('id')} in term {term} is changing the membership, but only "
                                   f"{len(ids & half)} of the {len(half)} {name} voters answer (a joint quorum "
                                   "needs a majority of both)")
    return OK, f"ok: leader {leader.get('id')} in term {term}; {len(up)} of {total} voters answer"
