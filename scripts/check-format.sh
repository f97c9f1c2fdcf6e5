#!/usr/bin/env bash
# Checks that every tracked C source and header follows .clang-format.
# Prints the files that do not and exits 1; `clang-format -i FILE` fixes one.
set -euo pipefail
cd "$(dirname "$0")/.."

CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
if ! command -v "$CLANG_FORMAT" >/dev/null 2>&1; then
  echo "check-format: $CLANG_FORMAT not found (run scripts/setup-deps.sh)" >&2
  exit 2
fi

# Tracked files (plus new files not ignored, so a check before the first commit sees them),
# never anything in a build directory.
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- \
    'lib/*.[ch]' 'services/*.[ch]' 'cli/*.[ch]' 'tests/*.[ch]' 'bench/*.[ch]' 'examples/*.[ch]' |
  grep -Ev '(^|/)build[^/]*/' | sort -u)

if ((${#files[@]} == 0)); then
  echo "check-format: no C files to check"
  exit 0
fi

bad=()
for f in "${files[@]}"; do
  [[ -f "$f" ]] || continue # deleted in the work tree
  if ! "$CLANG_FORMAT" --dry-run --Werror "$f" >/dev/null 2>&1; then
    bad+=("$f")
  fi
done

if ((${#bad[@]} > 0)); then
  echo "check-format: ${#bad[@]} of ${#files[@]} files are not formatted (fix with: clang-format -i FILE):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "check-format: ${#files[@]} files OK"
