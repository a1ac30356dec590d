#!/usr/bin/env bash
# Re-creates vendor/<crate> from the crate as published on crates.io plus
# the numbered patches in vendor/patches/<crate>/ (vendor/README.md).
#
#   scripts/vendor.sh                 re-create vendor/openraft and vendor/sled
#   scripts/vendor.sh --check         re-create them in a temp dir and fail on
#                                     any difference from vendor/ (CI)
#   scripts/vendor.sh --edit C DIR    make DIR a git repository: the published
#                                     crate C, then one commit per patch
#   scripts/vendor.sh --export C DIR  write vendor/patches/C/ back from DIR's
#                                     commits, then re-create vendor/C
#   scripts/vendor.sh --help
#
# The published .crate is taken from cargo's cache
# (${CARGO_HOME:-~/.cargo}/registry/cache/*/), else from target/vendor-crates/,
# else downloaded from static.crates.io (curl; without curl, through a
# throwaway `cargo fetch`). Its sha256 must be the one pinned in CRATES below: the
# patches are written against exactly that source. Patches are applied with
# `git apply` (they delete files, binary ones included, which GNU patch
# cannot); no repository is needed.
set -euo pipefail

# crate, version, sha256 of the .crate (crates.io index `cksum`, the same
# value a Cargo.lock records as `checksum`). vendor/<crate> holds it.
CRATES=(
  "openraft 0.9.25 a97014fb78acb77be3a40ac2da305f6dd3a6b243f3a908ace87d29b3972eaafd"
  "sled 0.34.7 7f96b4737c2ce5987354855aed3797279def4ebf734436c6aa4552cf8e169935"
)

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
  echo "vendor.sh: $*" >&2
  exit 1
}

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TMP=""
cleanup() { if [ -n "$TMP" ]; then rm -rf "$TMP"; fi; }
trap cleanup EXIT
new_tmp() {
  if [ -z "$TMP" ]; then
    TMP="$(mktemp -d "${TMPDIR:-/tmp}/raftlock-vendor.XXXXXX")"
  fi
}

# git with no user or system configuration (no diff.noprefix, external
# diff, apply.whitespace=error, ...) and no repository found by walking up
# from a temp dir: the patches must apply and read the same everywhere.
g() {
  env -u GIT_DIR -u GIT_WORK_TREE -u GIT_INDEX_FILE \
    GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
    GIT_CEILING_DIRECTORIES="${TMP:-/nonexistent}" \
    git -c core.autocrlf=false -c core.quotepath=false -c color.ui=false \
    -c user.name=vendor.sh -c user.email=vendor.sh@localhost -c init.defaultBranch=main \
    -c commit.gpgsign=false -c tag.gpgsign=false "$@"
}

sha256_of() {
  if command -v sha256sum > /dev/null; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

crate_entry() { # crate -> "crate version sha256"
  local e
  for e in "${CRATES[@]}"; do
    if [ "${e%% *}" = "$1" ]; then
      echo "$e"
      return
    fi
  done
  die "unknown crate '$1' (known: $(printf '%s ' "${CRATES[@]%% *}"))"
}

# Prints the path of a .crate file with the pinned checksum, downloading it
# if no cache has it.
crate_file() {
  local name="$1" ver="$2" sha="$3" f got
  local file="$name-$ver.crate"
  for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$file" "$ROOT/target/vendor-crates/$file"; do
    [ -f "$f" ] || continue
    got="$(sha256_of "$f")"
    if [ "$got" != "$sha" ]; then
      if [ "$f" = "$ROOT/target/vendor-crates/$file" ]; then
        echo "vendor.sh: $f has sha256 $got, not $sha: downloading it again" >&2
        rm -f "$f"
        continue
      fi
      die "$f has sha256 $got, expected $sha (pinned in $0): a corrupt cache, or not the published crate"
    fi
    echo "$f"
    return
  done
  mkdir -p "$ROOT/target/vendor-crates"
  local dest="$ROOT/target/vendor-crates/$file"
  local part="$dest.part.$$"
  if command -v curl > /dev/null; then
    echo "vendor.sh: downloading $file from static.crates.io" >&2
    curl -sSfL --retry 2 --connect-timeout 20 --max-time 120 -o "$part" \
      "https://static.crates.io/crates/$name/$file" \
      || { rm -f "$part"; die "$file is in no cache and could not be downloaded (offline? run once with network)"; }
  else
    # Without curl: cargo downloads it (and openraft's or sled's own
    # dependencies) into its cache for a throwaway package that needs it.
    echo "vendor.sh: no curl; fetching $file with cargo" >&2
    new_tmp
    mkdir -p "$TMP/fetch/src"
    printf '[package]\nname = "vendor-fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n[workspace]\n' \
      "$name" "$ver" > "$TMP/fetch/Cargo.toml"
    : > "$TMP/fetch/src/lib.rs"
    timeout 900 cargo fetch --quiet --manifest-path "$TMP/fetch/Cargo.toml" \
      || die "$file is in no cache and cargo could not fetch it (offline?)"
    for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$file"; do
      [ -f "$f" ] && cp "$f" "$part"
    done
    [ -f "$part" ] || die "cargo fetch did not leave $file in its cache"
  fi
  got="$(sha256_of "$part")"
  if [ "$got" != "$sha" ]; then
    rm -f "$part"
    die "downloaded $file has sha256 $got, expected $sha (pinned in $0)"
  fi
  mv "$part" "$dest"
  echo "$dest"
}

patches_of() { # crate -> its patch files, in order
  local dir="$ROOT/vendor/patches/$1" p
  [ -d "$dir" ] || die "no $dir"
  for p in "$dir"/*; do
    [ -e "$p" ] || continue
    case "$(basename "$p")" in
      [0-9][0-9][0-9][0-9]-*.patch) echo "$p" ;;
      *) die "$p: not a patch (the series is NNNN-name.patch files only)" ;;
    esac
  done | LC_ALL=C sort
}

# Extracts the published crate into $2 (which must not exist).
extract() {
  local name="$1" dest="$2" ver sha f
  read -r _ ver sha <<< "$(crate_entry "$name")"
  f="$(crate_file "$name" "$ver" "$sha")"
  mkdir -p "$dest.x"
  tar -xzf "$f" -C "$dest.x" --no-same-owner
  [ -d "$dest.x/$name-$ver" ] || die "$f does not hold $name-$ver/"
  mv "$dest.x/$name-$ver" "$dest"
  rmdir "$dest.x"
}

# Builds the vendored tree of crate $1 in $2: published source + patches.
build_tree() {
  local name="$1" dest="$2" p
  extract "$name" "$dest"
  while read -r p; do
    (cd "$dest" && g apply --whitespace=nowarn "$p") \
      || die "${p#"$ROOT"/} does not apply to $name as published + the patches before it"
  done < <(patches_of "$name")
}

vendored_crates() {
  local e
  for e in "${CRATES[@]}"; do echo "${e%% *}"; done
}

# --check: every difference between the committed vendor/<crate> and what
# the series gives.
check() {
  new_tmp
  local name bad=0 out
  mkdir "$TMP/from-patches"
  for name in $(vendored_crates); do
    build_tree "$name" "$TMP/from-patches/$name"
    if ! out="$(cd "$TMP" && diff -r -u "from-patches/$name" "$ROOT/vendor/$name" 2>&1)"; then
      bad=1
      echo "vendor.sh --check: vendor/$name is not $name as published + vendor/patches/$name/:" >&2
      printf '%s\n' "$out" | sed "s|$TMP/||g; s|$ROOT/||g" | head -n 200 >&2
    fi
    # A file the series makes that git ignores (the crates' own .gitignore
    # files match some) is on this disk but in no clone.
    if g -C "$ROOT" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
      local untracked
      untracked="$(cd "$TMP/from-patches/$name" && find . -type f | sed 's|^\./||' | LC_ALL=C sort \
        | LC_ALL=C comm -23 - <(g -C "$ROOT/vendor/$name" ls-files | LC_ALL=C sort))"
      if [ -n "$untracked" ]; then
        bad=1
        echo "vendor.sh --check: not tracked by git in vendor/$name (git add -f them):" >&2
        printf '%s\n' "$untracked" | sed 's/^/  /' >&2
      fi
    fi
  done
  if [ "$bad" = 1 ]; then
    echo "vendor.sh --check: FAILED. vendor/ is generated: change a fork through its patch series" >&2
    echo "  (vendor/README.md, 'Updating a fork'), then run scripts/vendor.sh." >&2
    exit 1
  fi
  echo "vendor.sh --check: vendor/ is the published crates + vendor/patches/ ($(echo $(vendored_crates)))"
}

# Makes directory $2 hold exactly the files of $1, writing only those that
# differ: files cargo sees unchanged keep their mtimes (no rebuild).
sync_tree() {
  local src="$1" dst="$2" f
  mkdir -p "$dst"
  while IFS= read -r -d '' f; do
    [ -f "$src/$f" ] || rm -f "$dst/$f"
  done < <(cd "$dst" && find . \( -type f -o -type l \) -print0)
  while IFS= read -r -d '' f; do
    if ! cmp -s "$src/$f" "$dst/$f"; then
      mkdir -p "$(dirname "$dst/$f")"
      cp "$src/$f" "$dst/$f"
    fi
  done < <(cd "$src" && find . -type f -print0)
  find "$dst" -mindepth 1 -type d -empty -delete
}

# Makes vendor/<crate> what the series gives.
regenerate() {
  new_tmp
  local name
  for name in "$@"; do
    build_tree "$name" "$TMP/$name"
    sync_tree "$TMP/$name" "$ROOT/vendor/$name"
    echo "vendor.sh: re-created vendor/$name"
  done
}

# --edit: a git repository holding the published crate (tag `upstream`)
# and one commit per patch; the subject is the patch's file name without
# .patch, the body its header.
edit() {
  local name="$1" dir="$2" p stem
  [ ! -e "$dir" ] || die "$dir exists"
  new_tmp
  extract "$name" "$TMP/edit"
  mkdir -p "$(dirname "$dir")"
  cp -R "$TMP/edit" "$dir"
  dir="$(cd "$dir" && pwd)"
  g -C "$dir" init -q
  g -C "$dir" add -A -f # the crates' own .gitignore files match some of their files
  g -C "$dir" commit -q -m "$name as published on crates.io"
  g -C "$dir" tag upstream
  while read -r p; do
    stem="$(basename "$p" .patch)"
    g -C "$dir" apply --index --whitespace=nowarn "$p" || die "${p#"$ROOT"/} does not apply"
    { printf '%s\n\n' "$stem"; sed -n '/^---$/q;p' "$p"; } > "$TMP/msg"
    g -C "$dir" commit -q --allow-empty --cleanup=verbatim -F "$TMP/msg"
  done < <(patches_of "$name")
  cat << EOF
$dir: $name as published (tag upstream), then one commit per patch.
Change a patch by folding a commit into it (git commit --fixup=<its commit>,
git rebase -i --autosquash upstream); add one with a commit whose subject is
its file name (NNNN-short-name) and whose body is its header. Then:
  scripts/vendor.sh --export $name $dir
EOF
}

# The diff of one commit as a patch body. A deleted file is written in
# git's binary form without the reverse hunk: its blob id (which git apply
# checks against the file it deletes), not its whole text.
commit_diff() {
  local dir="$1" c="$2" mode path blob
  g -C "$dir" diff --no-ext-diff --no-textconv --no-renames --binary --abbrev=12 -U3 \
    --diff-algorithm=myers --diff-filter=d "$c^" "$c" --
  while IFS= read -r -d '' path; do
    read -r mode _ blob _ <<< "$(g -C "$dir" ls-tree "$c^" -- "$path")"
    printf 'diff --git a/%s b/%s\ndeleted file mode %s\nindex %s..%040d\nGIT binary patch\nliteral 0\nHcmV?d00001\n\n' \
      "$path" "$path" "$mode" "$blob" 0
  done < <(g -C "$dir" diff --no-renames --name-only -z --diff-filter=D "$c^" "$c" --)
}

export_series() {
  local name="$1" dir="$2" c stem n=0
  dir="$(cd "$dir" && pwd)"
  g -C "$dir" rev-parse -q --verify upstream > /dev/null || die "$dir has no tag 'upstream' (made by --edit)"
  [ -z "$(g -C "$dir" status --porcelain)" ] || die "$dir has uncommitted changes"
  [ -z "$(g -C "$dir" rev-list --merges upstream..HEAD)" ] || die "$dir: merges between upstream and HEAD"
  new_tmp
  mkdir "$TMP/series"
  for c in $(g -C "$dir" rev-list --reverse upstream..HEAD); do
    stem="$(g -C "$dir" log -1 --format=%s "$c")"
    [[ "$stem" =~ ^[0-9]{4}-[a-z0-9][a-z0-9.-]*$ ]] \
      || die "commit $c: subject '$stem' is not a patch name (NNNN-short-name)"
    [ ! -e "$TMP/series/$stem.patch" ] || die "two commits named $stem"
    {
      g -C "$dir" log -1 --format=%b "$c" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'
      echo "---"
      commit_diff "$dir" "$c"
    } > "$TMP/series/$stem.patch"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || die "no commits after upstream in $dir"
  rm -rf "$ROOT/vendor/patches/$name"
  mkdir -p "$ROOT/vendor/patches/$name"
  cp "$TMP/series/"*.patch "$ROOT/vendor/patches/$name/"
  echo "vendor.sh: wrote $n patches to vendor/patches/$name/"
  regenerate "$name"
  # The tree the series gives must be the tree committed in $dir.
  if ! diff -r -q -x .git "$dir" "$ROOT/vendor/$name" > /dev/null; then
    diff -r -q -x .git "$dir" "$ROOT/vendor/$name" | head -n 50 >&2 || true
    die "vendor/$name differs from $dir's HEAD (uncommitted or ignored files there?)"
  fi
}

case "${1:-}" in
  -h | --help)
    usage
    ;;
  --check)
    [ $# -eq 1 ] || die "--check takes no arguments"
    check
    ;;
  --edit)
    [ $# -eq 3 ] || die "usage: $0 --edit CRATE DIR"
    crate_entry "$2" > /dev/null
    edit "$2" "$3"
    ;;
  --export)
    [ $# -eq 3 ] || die "usage: $0 --export CRATE DIR"
    crate_entry "$2" > /dev/null
    export_series "$2" "$3"
    ;;
  "")
    # shellcheck disable=SC2046
    regenerate $(vendored_crates)
    ;;
  *)
    die "unknown argument '$1' (see --help)"
    ;;
esac
