"""`python -m finetune.docs`: rewrite every generated block of README.md and docs/."""

from __future__ import annotations

from finetune.docs import architectures, methods, options


def main() -> int:
    options.update_readme(str(methods.README))
    methods.update_readme()
    methods.main(["--write"])
    architectures.main(["--write"])
    print(f"updated {methods.README} and {methods.DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
