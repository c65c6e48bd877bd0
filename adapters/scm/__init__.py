"""SCM pushes -> ``git.*`` events: the post-receive hook's adapter.

``refs`` reads the hook's stdin, ``push`` turns ref updates into events: ``graph``
finds the push's new commits with ONE ``git rev-list`` for all refs and gives each
to exactly one ref event, ``commits`` describes the listed ones with ONE ``git log``,
``tags`` reads tag objects with ONE ``cat-file``; every git call is bounded
(``git``). ``install`` writes the hook into a repository.
"""
