"""Pages of rows made from a list of records, made only for the page shown."""

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar, overload

from django.db.models import QuerySet

T = TypeVar("T")
R = TypeVar("R")


class RowsOf(Generic[T, R]):
    """What a Paginator pages: `records` (a QuerySet or a list) as rows made by `make`.

    The paginator counts the records (COUNT on a QuerySet) and slices out its page; only
    that page's records are read and made into rows (`make` reads what the rows add in
    one query for the whole page, never one per row).
    """

    def __init__(
        self, records: "QuerySet[Any, T] | Sequence[T]", make: Callable[[list[T]], list[R]]
    ) -> None:
        self.records = records
        self.make = make

    def count(self) -> int:  # what Paginator.count calls first, before len()
        return self.records.count() if isinstance(self.records, QuerySet) else len(self.records)

    def __len__(self) -> int:
        return self.count()

    def __iter__(self) -> Iterator[R]:
        return iter(self[:])

    @overload
    def __getitem__(self, index: int) -> R: ...
    @overload
    def __getitem__(self, index: slice) -> list[R]: ...
    def __getitem__(self, index: int | slice) -> R | list[R]:
        if isinstance(index, int):
            return self.make([self.records[index]])[0]
        return self.make(list(self.records[index]))
