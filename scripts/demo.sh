#!/usr/bin/env bash
# The Pons demo, both directions.
# A: a DIMSE modality stores into a DICOMweb archive through Pons, then a DIMSE
# workstation queries and retrieves from that archive through Pons.
# B: a DICOMweb application stores, searches and retrieves through Pons's
# DICOMweb face while the images live in a DIMSE-only PACS (scripts/demo_web.py).
#
#   storescu (DCMTK) --C-STORE--> pons --STOW-RS-----------> Orthanc /dicom-web
#   pynetdicom       --N-ACTION-> pons --QIDO-RS (verify)--> Orthanc /dicom-web
#                    <-N-EVENT-REPORT-- pons
#   findscu          --C-FIND---> pons --QIDO-RS-----------> Orthanc /dicom-web
#   movescu          --C-MOVE---> pons --QIDO-RS + WADO-RS-> Orthanc /dicom-web
#     storescp       <-C-STORE--- pons
#   getscu           --C-GET----> pons --QIDO-RS + WADO-RS-> Orthanc /dicom-web
#                    <-C-STORE--- pons  (same association)
#   findscu -W       --MWL C-FIND (called WORKLIST)--> pons --GET /modality-scheduled-procedure-steps-->
#                    pons's own DICOMweb face --MWL C-FIND--> Orthanc LEGACY's worklist plugin
#   storescu         --C-STORE (called CT_ARCHIVE, a [[route]])--> pons --STOW-RS--> Orthanc /dicom-web
#   dicomweb-client  --STOW/QIDO/WADO-RS--> pons --C-STORE/C-FIND/C-GET--> Orthanc LEGACY (DIMSE)
#   urllib           --/commitment-requests--> pons --N-ACTION--> Orthanc LEGACY (reports back to PONS)
#
# Installs the peers, builds Pons (release), starts a private Orthanc, Pons and
# a DCMTK storescp (the C-MOVE destination, listed in Pons's [[ae]]) on free
# 127.0.0.1 ports, checks C-ECHO both with `pons echo` and DCMTK's echoscu,
# stores pydicom's real samples (every common transfer syntax) and 50
# synthetic CT instances through Pons, waits until the archive has them all,
# asks for storage commitment of the CT instances (and one never sent), then finds the CT patient's studies (and all studies) with findscu, moves the
# CT study into the storescp with movescu and gets its series with getscu,
# then, as a CT modality, fetches its worklist through Pons (called AE
# WORKLIST, routed to the worklist of the DIMSE PACS) and stores through the
# CT_ARCHIVE route, prints a summary and stops everything.
#
# Environment: PONS_CACHE (default $HOME/.cache/pons), CARGO_TARGET_DIR
# (default $PONS_CACHE/target), KEEP=1 keeps the work directory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PONS_CACHE="${PONS_CACHE:-$HOME/.cache/pons}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PONS_CACHE/target}"
export TCP_NODELAY=1 # DCMTK and Orthanc leave Nagle on otherwise
CT_COUNT=50

say() { printf 'demo: %s\n' "$*"; }

work="$(mktemp -d "${TMPDIR:-/tmp}/pons-demo.XXXXXX")"
pids=()
cleanup() {
    local rc=$?
    # Pons first (it may still be forwarding), then the peers.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if ((rc != 0)); then
        for log in "$work/pons.log" "$work/orthanc/orthanc.log" "$work/storescp.log"; do
            if [[ -s "$log" ]]; then
                echo "--- tail of $log ---" >&2
                tail -n 30 "$log" >&2
            fi
        done
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        say "work directory kept: $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites -------------------------------------------------------------
scripts/install-deps.sh
py="$PONS_CACHE/venv/bin/python"
"$py" scripts/make_testdata.py --ct 200 >/dev/null
say "building pons (cargo build --release)"
cargo build --release --quiet
pons="$CARGO_TARGET_DIR/release/pons"

# --- the DICOMweb archive: Orthanc -----------------------------------------------
"$py" scripts/peers.py orthanc --dir "$work/orthanc" >"$work/orthanc.out" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
    [[ -f "$work/orthanc/ready.env" ]] && break
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/orthanc.out" >&2; exit 1; }
    sleep 0.1
done
[[ -f "$work/orthanc/ready.env" ]] || { say "Orthanc did not start" >&2; exit 1; }
# shellcheck disable=SC1091
source "$work/orthanc/ready.env"
say "Orthanc (DICOMweb archive) at $ORTHANC_DICOMWEB"

# --- the legacy DIMSE PACS (direction B): a second Orthanc, used only over DIMSE -----
# It knows Pons as a modality, as a real PACS must before it answers C-FIND/C-GET.
read -r dimse_port web_port demo_port < <("$py" scripts/peers.py free-ports 3)
# Its worklist plugin serves the modality worklist: three scheduled steps
# written with DCMTK's dump2dcm (two for station CT1 today, one MR).
mkdir -p "$work/worklists"
today=$(date +%Y%m%d)
wl=0
for step in "ACC-1001 Doe^Jane P-1001 CT CT1 0900" "ACC-1002 Roe^Rick P-1002 CT CT1 1030" \
    "ACC-1003 Poe^Paul P-1003 MR MR1 0945"; do
    read -r acc name pid modality station time <<<"$step"
    wl=$((wl + 1))
    cat >"$work/worklists/$acc.dump" <<EOF
(0008,0005) CS [ISO_IR 100]
(0008,0050) SH [$acc]
(0010,0010) PN [$name]
(0010,0020) LO [$pid]
(0020,000d) UI [1.2.826.0.1.3680043.10.1055.77.$wl]
(0032,1060) LO [$modality examination]
(0040,0100) SQ (Sequence with explicit length #=1)
(fffe,e000) na (Item with explicit length #=6)
(0008,0060) CS [$modality]
(0040,0001) AE [$station]
(0040,0002) DA [$today]
(0040,0003) TM [$time]
(0040,0007) LO [$modality routine]
(0040,0009) SH [SPS$wl]
(fffe,e00d) na (ItemDelimitationItem for re-encoding)
(fffe,e0dd) na (SequenceDelimitationItem for re-encod.)
(0040,1001) SH [RP$wl]
EOF
    dump2dcm "$work/worklists/$acc.dump" "$work/worklists/$acc.wl"
done
"$py" scripts/peers.py orthanc --dir "$work/pacs" --aet LEGACY --worklists "$work/worklists" \
    --modality "PONS@127.0.0.1:$dimse_port" >"$work/pacs.out" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
    [[ -f "$work/pacs/ready.env" ]] && break
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/pacs.out" >&2; exit 1; }
    sleep 0.1
done
[[ -f "$work/pacs/ready.env" ]] || { say "the PACS Orthanc did not start" >&2; exit 1; }
pacs_dicom_port=$(sed -n 's/^ORTHANC_DICOM_PORT=//p' "$work/pacs/ready.env")
pacs_rest=$(sed -n 's/^ORTHANC_REST=//p' "$work/pacs/ready.env")
say "Orthanc (DIMSE PACS) LEGACY@127.0.0.1:$pacs_dicom_port"

# --- Pons -------------------------------------------------------------------------
cat >"$work/pons.toml" <<EOF
[dimse]
ae_title = "PONS"
listen = "127.0.0.1:$dimse_port"
accept_any_calling_ae = true

[web]
listen = "127.0.0.1:$web_port"

[[upstream]]
name = "archive"
url = "$ORTHANC_DICOMWEB"
stow_batch = 50
stow_concurrency = 4

# The RIS, as modalities see it: LEGACY's worklist, published as a DICOMweb
# worklist by Pons's own DICOMweb face (direction B).
[[upstream]]
name = "ris"
url = "http://127.0.0.1:$web_port/dicom-web"
worklist = "mwl"

[[route]]
called_ae = "CT_ARCHIVE"
upstream = "archive"

[[route]]
called_ae = "WORKLIST"
upstream = "ris"

[spool]
mode = "spool"
dir = "$work/spool"

[jobs]
url = "sqlite://$work/jobs.db"

[cache]
dir = "$work/cache"

[[ae]]
title = "DEMO"
host = "127.0.0.1"
port = $demo_port

[[pacs]]
name = "legacy"
ae_title = "LEGACY"
host = "127.0.0.1"
port = $pacs_dicom_port
EOF
"$pons" check-config "$work/pons.toml" >/dev/null
RUST_LOG="${RUST_LOG:-info}" "$pons" serve --config "$work/pons.toml" >"$work/pons.log" 2>&1 &
pons_pid=$!
pids+=("$pons_pid")
"$py" scripts/peers.py wait-tcp "$dimse_port" --timeout 20 --pid "$pons_pid"
say "Pons listening: DIMSE PONS@127.0.0.1:$dimse_port, HTTP 127.0.0.1:$web_port"

# --- C-ECHO -------------------------------------------------------------------------
"$pons" echo "PONS@127.0.0.1:$dimse_port" --calling-ae DEMO
say "pons echo: ok"
echoscu -aet DEMO -aec PONS 127.0.0.1 "$dimse_port"
say "echoscu: ok"

# --- C-STORE through Pons into the archive ---------------------------------------
td="$PONS_CACHE/testdata"
files=()
while IFS=$'\t' read -r name _; do
    files+=("$td/samples/$name")
done < <(tail -n +2 "$td/samples/manifest.tsv")
n_samples=${#files[@]}
while IFS=$'\t' read -r name _; do
    files+=("$td/ct/200/$name")
done < <(tail -n +2 "$td/ct/200/manifest.tsv" | head -n "$CT_COUNT")
total=${#files[@]}
n_syntaxes=$(tail -n +2 "$td/samples/manifest.tsv" | cut -f2 | sort -u | wc -l)

# Each file goes in its own transfer syntax (storescu alone would convert).
"$py" scripts/peers.py storescu-config "${files[@]}" >"$work/storescu.cfg"
say "storing $n_samples samples ($n_syntaxes transfer syntaxes) + $CT_COUNT CT instances through Pons"
start=$(date +%s.%N)
if ! storescu -xf "$work/storescu.cfg" Default -aet DEMO -aec PONS \
    127.0.0.1 "$dimse_port" "${files[@]}" >"$work/storescu.log" 2>&1; then
    tail -n 20 "$work/storescu.log" >&2
    say "storescu failed" >&2
    exit 1
fi
stored_at=$(date +%s.%N)
archived=$("$py" scripts/peers.py wait-instances "$ORTHANC_REST" "$total" --timeout 120) || {
    say "archive holds ${archived:-?} of $total instances after 120 s" >&2
    exit 1
}
done_at=$(date +%s.%N)

say "archive holds all $archived instances"

# --- storage commitment through Pons (direction A): N-ACTION -> archive check ----------
# The modality asks whether the archive took the CT instances (plus one it never
# sent); Orthanc has no /commitment-requests, so Pons verifies them with QIDO-RS
# and answers with N-EVENT-REPORT on the same association.
missing_uid="1.2.826.0.1.3680043.10.1055.404"
"$py" -c '
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))[: int(sys.argv[2])]
refs = [[r["sop_class_uid"], r["sop_instance_uid"]] for r in rows]
print(json.dumps(refs + [["1.2.840.10008.5.1.4.1.1.2", sys.argv[3]]]))
' "$td/ct/200/manifest.tsv" "$CT_COUNT" "$missing_uid" >"$work/commit-refs.json"
say "storage commitment of $CT_COUNT CT instances + 1 never sent, through Pons (N-ACTION)"
"$py" scripts/commit_scu.py request 127.0.0.1 "$dimse_port" "$work/commit-refs.json" \
    --calling DEMO --called PONS --wait 60 >"$work/commit.json"
read -r commit_event commit_ok commit_failed commit_secs < <("$py" -c '
import json, sys
r = json.load(open(sys.argv[1]))
rep = (r["reports"] or [{}])[0]
failed = rep.get("failed", [])
reasons = ",".join(sorted({"%04X" % f[2] for f in failed})) or "-"
print(rep.get("event_type", 0), len(rep.get("committed", [])), "%d:%s" % (len(failed), reasons),
      "%.2f" % (r["seconds"] or 0))
' "$work/commit.json")
((commit_event == 2 && commit_ok == CT_COUNT)) && [[ $commit_failed == 1:0112 ]] || {
    cat "$work/commit.json" >&2
    say "storage commitment did not report $CT_COUNT committed + 1 missing" >&2
    exit 1
}

# --- query/retrieve through Pons (direction A): C-FIND, C-MOVE, C-GET ---------------
# The DIMSE workstation: findscu/movescu/getscu call PONS as DEMO; the C-MOVE
# destination DEMO is a DCMTK storescp on the port Pons's [[ae]] DEMO names.
tag() { # tag TAG FILE: the value of one element, as dcmdump prints it
    dcmdump -q +P "$1" "$2" | sed -n 's/^[^[]*\[\(.*\)\].*$/\1/p' | head -n 1
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ct_first="$td/ct/200/$(tail -n +2 "$td/ct/200/manifest.tsv" | head -n 1 | cut -f1)"
ct_patient=$(tag 0010,0020 "$ct_first")
ct_study=$(tag 0020,000d "$ct_first")
ct_series=$(tag 0020,000e "$ct_first")
ct_series_count=$(for f in "${files[@]: n_samples}"; do tag 0020,000e "$f"; done |
    grep -cxF "$ct_series")

mkdir -p "$work/moved" "$work/got" "$work/found" "$work/found-all"
storescp -aet DEMO +xa -od "$work/moved" "$demo_port" >"$work/storescp.log" 2>&1 &
pids+=($!)
"$py" scripts/peers.py wait-tcp "$demo_port" --timeout 10 --pid "${pids[-1]}"

dimse() { # dimse TOOL LOG ARGS...: run a DCMTK SCU against Pons, fail loudly
    local tool=$1 log=$2
    shift 2
    if ! "$tool" -v -aet DEMO -aec PONS "$@" 127.0.0.1 "$dimse_port" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        say "$tool failed" >&2
        exit 1
    fi
}
study_keys=(-k QueryRetrieveLevel=STUDY -k StudyInstanceUID -k StudyDate -k StudyDescription
    -k ModalitiesInStudy)

say "C-FIND (study level) PatientID=$ct_patient through Pons"
t0=$(date +%s.%N)
dimse findscu "$work/findscu.log" -S -X -od "$work/found" "${study_keys[@]}" \
    -k "PatientID=$ct_patient"
t1=$(date +%s.%N)
find_matches=$(find "$work/found" -name 'rsp*.dcm' | wc -l)
find_secs=$(elapsed "$t0" "$t1")
for f in "$work"/found/rsp*.dcm; do
    [[ -e "$f" ]] && printf '  match: PatientID %s  StudyInstanceUID %s  (%s)\n' \
        "$(tag 0010,0020 "$f")" "$(tag 0020,000d "$f")" "$(tag 0008,1030 "$f")"
done
((find_matches == 1)) || { say "expected 1 study for $ct_patient, got $find_matches" >&2; exit 1; }

say "C-FIND (study level) every study in the archive through Pons"
t0=$(date +%s.%N)
dimse findscu "$work/findscu-all.log" -S -X -od "$work/found-all" "${study_keys[@]}" \
    -k PatientID
t1=$(date +%s.%N)
all_matches=$(find "$work/found-all" -name 'rsp*.dcm' | wc -l)
all_secs=$(elapsed "$t0" "$t1")
mapfile -t some < <(find "$work/found-all" -name 'rsp*.dcm' | sort | head -n 3)
for f in "${some[@]}"; do
    printf '  match: PatientID %s  StudyInstanceUID %s\n' "$(tag 0010,0020 "$f")" \
        "$(tag 0020,000d "$f")"
done
((all_matches > 0)) || { say "C-FIND of every study found nothing" >&2; exit 1; }

say "C-MOVE of study $ct_study through Pons to storescp DEMO"
t0=$(date +%s.%N)
dimse movescu "$work/movescu.log" -S -aem DEMO -k QueryRetrieveLevel=STUDY \
    -k "StudyInstanceUID=$ct_study"
t1=$(date +%s.%N)
moved=$(find "$work/moved" -type f | wc -l)
move_secs=$(elapsed "$t0" "$t1")
((moved == CT_COUNT)) || { say "storescp received $moved of $CT_COUNT instances" >&2; exit 1; }

say "C-GET of series $ct_series through Pons"
t0=$(date +%s.%N)
dimse getscu "$work/getscu.log" -S -od "$work/got" -k QueryRetrieveLevel=SERIES \
    -k "StudyInstanceUID=$ct_study" -k "SeriesInstanceUID=$ct_series"
t1=$(date +%s.%N)
got=$(find "$work/got" -type f | wc -l)
get_secs=$(elapsed "$t0" "$t1")
((got == ct_series_count)) || {
    say "getscu received $got of $ct_series_count instances" >&2
    exit 1
}

# --- a CT modality's day: its worklist through Pons, then images through a route ------
say "worklist of station CT1 for today (MWL C-FIND as CT1 to WORKLIST, through Pons twice)"
mkdir -p "$work/worklist"
t0=$(date +%s.%N)
if ! findscu -W -aet CT1 -aec WORKLIST -X -od "$work/worklist" \
    -k "ScheduledProcedureStepSequence[0].Modality=CT" \
    -k "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT1" \
    -k "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=$today" \
    -k "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime" \
    -k AccessionNumber -k PatientName -k PatientID \
    127.0.0.1 "$dimse_port" >"$work/worklist.log" 2>&1; then
    tail -n 20 "$work/worklist.log" >&2
    say "findscu -W failed" >&2
    exit 1
fi
t1=$(date +%s.%N)
wl_secs=$(elapsed "$t0" "$t1")
wl_matches=$(find "$work/worklist" -name 'rsp*.dcm' | wc -l)
while read -r f; do
    printf '  scheduled: %s  %s  %s at %s\n' "$(tag 0008,0050 "$f")" "$(tag 0010,0010 "$f")" \
        "$(tag 0008,0060 "$f")" "$(tag 0040,0003 "$f")"
done < <(find "$work/worklist" -name 'rsp*.dcm' | sort)
((wl_matches == 2)) || { say "expected 2 scheduled CT steps for CT1, got $wl_matches" >&2; exit 1; }

mapfile -t routed_files < <(tail -n +2 "$td/ct/200/manifest.tsv" |
    sed -n "$((CT_COUNT + 1)),$((CT_COUNT + 5))p" | cut -f1 | sed "s|^|$td/ct/200/|")
say "storing ${#routed_files[@]} CT instances as CT1 to CT_ARCHIVE (the route to the archive)"
storescu -aet CT1 -aec CT_ARCHIVE 127.0.0.1 "$dimse_port" "${routed_files[@]}" \
    >"$work/storescu-routed.log" 2>&1 || { say "storescu to CT_ARCHIVE failed" >&2; exit 1; }
routed_total=$((total + ${#routed_files[@]}))
archived_routed=$("$py" scripts/peers.py wait-instances "$ORTHANC_REST" "$routed_total" --timeout 60) || {
    say "archive holds ${archived_routed:-?} of $routed_total instances" >&2
    exit 1
}
if echoscu -aet CT1 -aec NOBODY 127.0.0.1 "$dimse_port" >/dev/null 2>&1; then
    say "a C-ECHO to an unknown called AE title was accepted" >&2
    exit 1
fi
say "archive holds all $archived_routed; an unknown called AE title (NOBODY) is refused"

# --- summary -----------------------------------------------------------------------
mb=$(du -cb "${files[@]}" | tail -n 1 | cut -f1)
awk -v sent="$total" -v got="$archived" -v t0="$start" -v t1="$stored_at" -v t2="$done_at" \
    -v bytes="$mb" 'BEGIN {
    printf "\nPons demo summary\n"
    printf "  instances sent (C-STORE via Pons): %d (%.1f MB)\n", sent, bytes / 1e6
    printf "  instances in the archive:          %d\n", got
    printf "  C-STORE acknowledged after:        %.2f s\n", t1 - t0
    printf "  all in the archive after:          %.2f s\n", t2 - t0
}'
printf '  storage commitment (N-ACTION):     event type %d, %d committed, 1 failed (0112 no such instance) after %s s\n' \
    "$commit_event" "$commit_ok" "$commit_secs"
printf '  C-FIND by PatientID:               %d match(es) in %s s (%s)\n' "$find_matches" \
    "$find_secs" "$ct_patient"
printf '  C-FIND every study:                %d matches in %s s\n' "$all_matches" "$all_secs"
printf '  C-MOVE study to storescp:          %d instances received in %s s\n' "$moved" "$move_secs"
printf '  C-GET series:                      %d instances received in %s s\n' "$got" "$get_secs"
printf '  worklist (MWL C-FIND) for CT1:     %d scheduled steps in %s s\n' "$wl_matches" "$wl_secs"
printf '  C-STORE through route CT_ARCHIVE:  %d instances, archive holds %d\n' \
    "${#routed_files[@]}" "$archived_routed"

# --- direction B: a DICOMweb application uses Pons in front of the DIMSE PACS -------
mapfile -t web_files < <(tail -n +2 "$td/ct/200/manifest.tsv" | head -n "$CT_COUNT" |
    cut -f1 | sed "s|^|$td/ct/200/|")
"$py" scripts/demo_web.py "http://127.0.0.1:$web_port/dicom-web" "$pacs_rest" "$work/web" \
    "${web_files[@]}"
