"""One session as the api serves it, from the client's WebSocket to the operator.

- :mod:`.state`: the state machine and the one map from CodeSession phases to states;
- :mod:`.cluster`: the Kubernetes calls for sessions (create, start, end, claim, log);
- :mod:`.watches`, :mod:`.warm`: the informers the streams wait on, warm pods to claim;
- :mod:`.streaming`, :mod:`.bridge`: one client WebSocket from pending to final, and
  the attach bridge while the program runs; :mod:`.messages`, :mod:`.decoding`,
  :mod:`.limits`, :mod:`.run_request`: what the bridge speaks and counts;
- :mod:`.live`: the sessions this process streams (claims, unattached timers, drain).

Kubernetes access itself is :mod:`icee_kube`'s; the HTTP routes only translate to calls here.
"""
