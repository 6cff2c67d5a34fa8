"""Kubernetes access, shared by the api and the operator; it knows nothing about sessions.

- :mod:`icee_kube.kubeconfig`: where the API server is and how to authenticate;
- :mod:`icee_kube.client`: the REST client (calls, lists, watches, streams) and its errors;
- :mod:`icee_kube.paths`, :mod:`icee_kube.pods`: REST paths and pod reading, pure;
- :mod:`icee_kube.informer`: a cache kept correct by list + watch;
- :mod:`icee_kube.attach`, :mod:`icee_kube.channel`: the attach WebSocket and its codec.
"""
