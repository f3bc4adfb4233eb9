"""The model store: the Hugging Face cache plus deploy's records of what it verified.

`locate` finds a variant's files offline; `pull`, `verify`, `bundle` and `import_bundle`
live in their own modules (imported lazily by `toolkit.api.store`).
"""

from toolkit.store.locate import locate
from toolkit.store.offline import offline_env

__all__ = ["locate", "offline_env"]
