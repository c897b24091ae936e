"""The public API, for type checkers; ``__init__.py`` loads these names on first use."""

from .context import Context as Context
from .errors import CacheAccessError as CacheAccessError
from .errors import CorruptResultError as CorruptResultError
from .errors import InputMissingError as InputMissingError
from .errors import JobPrefixError as JobPrefixError
from .errors import RequirementTypeError as RequirementTypeError
from .errors import ResultMissingError as ResultMissingError
from .errors import ResultNotPicklableError as ResultNotPicklableError
from .errors import TaskArgumentError as TaskArgumentError
from .errors import TaskCycleError as TaskCycleError
from .errors import TaskDefinitionWarning as TaskDefinitionWarning
from .errors import TaskFailedError as TaskFailedError
from .errors import TaskprocError as TaskprocError
from .errors import UnsetRequirementError as UnsetRequirementError
from .requires import Const as Const
from .requires import InputFile as InputFile
from .requires import Req as Req
from .task import Requires as Requires
from .task import RequiresDict as RequiresDict
from .task import RequiresList as RequiresList
from .task import Task as Task
from .task import TaskBase as TaskBase
from .task import TaskType as TaskType
from .task import infer_task_type as infer_task_type
from .taskgraph import task_graph as task_graph

__version__: str
