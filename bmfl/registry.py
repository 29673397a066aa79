"""One name → factory registry, used for models, datasets, aggregators, filters and
attacks, so a user adds a component with a decorator and nothing else changes."""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Factories of ``kind`` (e.g. "aggregator") by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator adding a factory under ``name``; a class also gets ``cls.name``."""

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if isinstance(factory, type):
                factory.name = name
            self._factories[name] = factory
            return factory

        return add

    def factory(self, name: str) -> Callable[..., T]:
        """The factory (usually the class) registered as ``name``."""
        try:
            return self._factories[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def create(self, name: str, **params: Any) -> T:
        """Build the registered ``name`` with its keyword parameters."""
        return self.factory(name)(**params)

    def names(self) -> list[str]:
        return sorted(self._factories)


class ParamsRepr:
    """``ClassName(param=value, ...)`` from the instance's public attributes."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"
