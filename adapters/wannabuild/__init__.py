"""wanna-build -> bus: the build queue's ``transactions`` log as ``wanna-build.build.<state>``.

``states`` slugs wanna-build's states into topic tokens, ``translate`` turns one
``transactions`` row (enriched from ``packages``) into an :class:`~gateway.event.Event`,
``query`` is the only SQL (read-only, parameterized, time-bounded) and ``poller``
runs one poll: read the new rows plus an overlap window, commit the new events and
the cursor in one store transaction. ``messages`` is the message type of every
``wanna-build.build.<state>`` (schema, summary, link, users, packages, severity).
"""
