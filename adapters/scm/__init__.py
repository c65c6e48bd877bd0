"""SCM pushes -> ``git.*`` events: the post-receive hook's adapter.

``refs`` reads the hook's stdin, ``push`` turns ref updates into events, with
``commits`` (one ``git log`` per ref update) and ``tags`` (one ``cat-file`` per
push) adding details through ``git`` (bounded subprocesses). ``install`` writes
the hook into a repository.
"""
