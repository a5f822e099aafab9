import sys
import traceback

reported: list[str] = []


def report(message: str, *, exc_info: bool = False) -> None:
    """As modules/errors.py: print the message (and the traceback) to stderr."""
    text = message + ("\n" + traceback.format_exc() if exc_info else "")
    reported.append(text)
    print(text, file=sys.stderr)


def display(e: Exception, task: str) -> None:
    report(f"{task}: {type(e).__name__}: {e}", exc_info=True)
