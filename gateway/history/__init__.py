"""History: every message on the bus, stored once, searchable (datanommer/datagrepper).

* :mod:`.records` turns an envelope into what is stored (service, users, packages).
* :mod:`.store` is the storage interface (:class:`~.store.HistoryStore`) and its SQLite
  implementation; :mod:`.pgstore` is PostgreSQL behind the same interface, and
  :mod:`.backends` picks one from ``history.database`` (a path or a URL).
* :mod:`.migrate` applies the versioned SQL files under ``migrations/<backend>/``.
* :mod:`.recorder` is ``busgate record``: a :class:`~gateway.consumer.Consumer` whose
  position lives in the SQLite history, so each message and the position commit in
  one transaction; over PostgreSQL the message commits first and the local position
  after (either way a kill -9 neither loses nor doubles).
* :mod:`.query` reads datagrepper's ``/raw`` parameters (every bad one a 400 with the
  reason); :mod:`.web` is ``busgate web``.
"""
