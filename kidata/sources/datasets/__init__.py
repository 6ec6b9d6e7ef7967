"""Standardization entries (``DatasetSpec``) for named RLDS datasets, one module per family; each
module registers its entries on import (``kidata.sources.registry.register_dataset``)."""
