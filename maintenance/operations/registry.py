"""The registry of operations: only what is registered here can be run."""

_operations = {}


class UnknownOperation(LookupError):
    pass


def register(operation_class):
    operation = operation_class()
    if not operation.name or operation.name in _operations:
        raise ValueError(f"operation name missing or taken: {operation.name!r}")
    _operations[operation.name] = operation
    return operation_class


def get(name):
    try:
        return _operations[name]
    except KeyError:
        known = ", ".join(sorted(_operations)) or "none"
        raise UnknownOperation(f"unknown operation {name!r} (known: {known})") from None


def all_operations():
    return [_operations[name] for name in sorted(_operations)]
