#!/usr/bin/env bash
# Real-world PDF and TIFF files that nobody here wrote, for the renderer's corpus test
# (tests/integration/render/test_corpus.py): the test files that PDF and imaging
# libraries ship in their source distributions on PyPI, and PDF manuals from Debian's
# -doc packages. Versions are pinned, so every machine tests the same files.
#
# Cached outside the repository, never committed: $FAXBOX_CORPUS_DIR, else
# /var/cache/faxbox/corpus, else ~/.cache/faxbox/corpus. Idempotent: a source already
# unpacked is not fetched again. Prints the cache directory on its last line.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# sdist name==version, and the files of it to keep.
PYPI_SOURCES=(
    "pillow==13.0.0:*.tif *.tiff *.pdf"
    "pikepdf==10.18.0:*.pdf"
    "pypdf==7.1.1:*.pdf"
)
# Debian packages whose PDFs to keep (architecture-independent documentation).
DEBIAN_SOURCES=(camlidl-doc docbook-xsl-doc-pdf freefem-doc gri-pdf-doc)

corpus_dir() {
    local dir
    for dir in "${FAXBOX_CORPUS_DIR:-}" /var/cache/faxbox/corpus "${HOME:-/root}/.cache/faxbox/corpus"; do
        [[ -n "$dir" ]] || continue
        if mkdir -p "$dir" 2>/dev/null && [[ -w "$dir" ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    die "corpus: no writable cache directory (set FAXBOX_CORPUS_DIR)"
}

CORPUS="$(corpus_dir)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

pypi_source() {
    local spec="${1%%:*}" patterns="${1#*:}"
    local name="${spec%%==*}" target="$CORPUS/pypi/${spec/==/-}"
    [[ -f "$target/.complete" ]] && return 0
    log "corpus: $spec (source distribution from PyPI)"
    rm -rf "$target" && mkdir -p "$target"
    python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$WORK/$name" "$spec" \
        || die "corpus: pip could not download $spec"
    local archive
    archive="$(find "$WORK/$name" -maxdepth 1 -name '*.tar.gz' -print -quit)"
    [[ -n "$archive" ]] || die "corpus: no source archive for $spec"
    # shellcheck disable=SC2086  # the patterns are meant to be split
    tar -xzf "$archive" -C "$target" --wildcards --no-anchored $patterns \
        || die "corpus: nothing matched $patterns in $archive"
    touch "$target/.complete"
}

debian_source() {
    local package="$1" target="$CORPUS/debian/$1"
    [[ -f "$target/.complete" ]] && return 0
    log "corpus: $package (Debian package)"
    rm -rf "$target" && mkdir -p "$target" "$WORK/$package"
    if ! (cd "$WORK/$package" && apt-get download "$package" >/dev/null 2>&1); then
        apt-get update -qq || true
        (cd "$WORK/$package" && apt-get download "$package" >/dev/null) \
            || die "corpus: apt-get download $package failed"
    fi
    dpkg-deb -x "$WORK/$package"/*.deb "$WORK/$package/root"
    local file
    while IFS= read -r -d '' file; do
        case "$file" in
            *.pdf.gz) gzip -dc "$file" >"$target/$(basename "${file%.gz}")" ;;
            *.pdf) cp "$file" "$target/" ;;
        esac
    done < <(find "$WORK/$package/root" -type f \( -name '*.pdf' -o -name '*.pdf.gz' \) -print0)
    [[ -n "$(find "$target" -name '*.pdf' -print -quit)" ]] || die "corpus: no PDF in $package"
    touch "$target/.complete"
}

for source in "${PYPI_SOURCES[@]}"; do pypi_source "$source"; done
for package in "${DEBIAN_SOURCES[@]}"; do debian_source "$package"; done
printf '%s\n' "$CORPUS"
