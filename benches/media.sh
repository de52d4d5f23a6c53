#!/bin/bash
# shellcheck disable=SC2016,SC2317 # bash -c bodies; functions run through `rounds`
# Virtual media build speed: ironboot vs the tools Ironic shells out to, in one run, same inputs.
#
#   ISO (BIOS, Ironic's mkisofs flags): ironboot media iso --bios
#        vs genisoimage and `xorriso -as mkisofs` with
#           -r -V VMEDIA_BOOT_ISO -J -l -publisher ID -no-emul-boot -boot-load-size 4
#           -boot-info-table -b isolinux/isolinux.bin
#        vs cat of the same bytes into one file (the physical limit), and cat + fsync.
#   ISO (BIOS + UEFI): ironboot --bios --uefi (ESP built in-process from a prebuilt GRUB image)
#        vs genisoimage / xorriso with the pre-2020 Ironic hybrid flags and a prebuilt
#        efiboot.img (-eltorito-alt-boot -e boot/grub/efiboot.img -no-emul-boot), cat, cat+fsync.
#   Floppy: ironboot media floppy vs mkfs.msdos -C + mcopy (Ironic's create_vfat_image), as
#        whole processes, and the same followed by an fsync of the image (what ironboot does).
#
# Targets: ISO time <= 1.0x genisoimage's, <= 1.3x cat's and <= 1.1x cat + fsync's
# (issue 17); floppy >= 2x as fast as mkfs.msdos + mcopy. Inputs: a KERNEL_MIB kernel and
# a RAMDISK_MIB ramdisk of random bytes, page cache warm, outputs next to the inputs.
# ironboot fsyncs what it writes (nodes fetch these files); the peers do not, so cat+fsync
# is the limit for a durable write.
# Every build's output is checked after it is timed: the kernel and ramdisk read back out of
# each ISO with isoinfo (or the cat output as a whole) and parameters.txt read back out of
# each floppy with mtype, against checksums of the source files.
# Rules, output and exit status: benches/lib.sh.
read -r -d '' USAGE << 'EOF'
Usage: benches/media.sh [--strict]
Env:   ROUNDS (default 10), KERNEL_MIB (10), RAMDISK_MIB (200), BENCH_SUM, IB, WORK
       (benches/lib.sh; WORK defaults to a directory under the cargo target dir)
Needs: genisoimage (with isoinfo) xorriso isolinux syslinux-common grub-common
       grub-efi-amd64-bin dosfstools mtools
EOF
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
ROUNDS=${ROUNDS:-10}
KERNEL_MIB=${KERNEL_MIB:-10}
RAMDISK_MIB=${RAMDISK_MIB:-200}
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$TARGET"
TMPDIR=$(realpath "$TARGET") # same filesystem as the build, as before
export TMPDIR
bench_usage "$USAGE"
bench_init media "$@"
bench_need genisoimage isoinfo xorriso mkfs.msdos mcopy mmd mtype
bench_ironboot
cd "$WORK"

head -c $((KERNEL_MIB << 20)) /dev/urandom > vmlinuz
head -c $((RAMDISK_MIB << 20)) /dev/urandom > initrd
APPEND="nofb vga=normal ipa-api-url=http://10.0.2.2:6385 boot_method=vmedia"
PUB=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0

# Ironic's BIOS tree. genisoimage patches isolinux.bin in place, so it gets its own copy.
mkdir -p tree/isolinux
ln vmlinuz tree/vmlinuz
ln initrd tree/initrd
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 tree/isolinux/
printf 'default boot\nlabel boot\nkernel /vmlinuz\nappend initrd=/initrd text %s ir_pub_id=%s --\n' \
  "$APPEND" "$PUB" > tree/isolinux/isolinux.cfg

# UEFI: one GRUB image for everybody; the peers get a prebuilt efiboot.img holding it.
"$IB" media grub-efi -o grubx64.efi > /dev/null
mkdir -p uefitree/boot/grub uefitree/isolinux uefitree/EFI/BOOT
ln vmlinuz uefitree/vmlinuz
ln initrd uefitree/initrd
cp tree/isolinux/* uefitree/isolinux/
printf 'set timeout=0\nmenuentry boot {\n linux /vmlinuz %s\n initrd /initrd\n}\n' "$APPEND" > uefitree/EFI/BOOT/grub.cfg
mkfs.msdos -C uefitree/boot/grub/efiboot.img 1024 > /dev/null
mmd -i uefitree/boot/grub/efiboot.img ::/EFI ::/EFI/BOOT
mcopy -i uefitree/boot/grub/efiboot.img grubx64.efi ::/EFI/BOOT/BOOTX64.EFI
mcopy -i uefitree/boot/grub/efiboot.img uefitree/EFI/BOOT/grub.cfg ::/EFI/BOOT/grub.cfg

ISO_FLAGS=(-r -V VMEDIA_BOOT_ISO -J -l -publisher "$PUB" -no-emul-boot -boot-load-size 4 -boot-info-table -b isolinux/isolinux.bin)
UEFI_FLAGS=("${ISO_FLAGS[@]}" -eltorito-alt-boot -e boot/grub/efiboot.img -no-emul-boot)
printf 'ipa-api-url=http://10.0.2.2:6385\nipa-agent-token=abc\nboot_method=vmedia\nBOOTIF=52:54:00:12:34:56' > parameters.txt
CAT_BIOS=(vmlinuz initrd tree/isolinux/isolinux.bin tree/isolinux/ldlinux.c32)
CAT_UEFI=(vmlinuz initrd uefitree/boot/grub/efiboot.img uefitree/isolinux/isolinux.bin uefitree/isolinux/ldlinux.c32)

SUM_KERNEL=$(checksum vmlinuz)
SUM_RAMDISK=$(checksum initrd)
SUM_PARAMS=$(checksum parameters.txt)
# isolinux.bin is patched by genisoimage's boot info table; the cat sides copy the tree's.
sum_cat() { cat "$@" | checksum_stdin; }

# An ISO holds the source kernel and ramdisk byte for byte (read back through Rock Ridge).
iso_ok() {
  local k r
  k=$(isoinfo -R -i "$1" -x /vmlinuz 2> /dev/null | checksum_stdin)
  r=$(isoinfo -R -i "$1" -x /initrd 2> /dev/null | checksum_stdin)
  if [ "$k" != "$SUM_KERNEL" ] || [ "$r" != "$SUM_RAMDISK" ]; then
    echo "corrupt: /vmlinuz $k (source $SUM_KERNEL), /initrd $r (source $SUM_RAMDISK)"
    return 1
  fi
}
# A floppy holds parameters.txt byte for byte.
floppy_ok() {
  local p
  p=$(mtype -i "$1" ::/parameters.txt 2> /dev/null | checksum_stdin)
  if [ "$p" != "$SUM_PARAMS" ]; then
    echo "corrupt: parameters.txt $p (source $SUM_PARAMS)"
    return 1
  fi
}

iso_bios() {
  case $1 in
    ironboot) transfer bios.ironboot out.iso @iso_ok \
      quiet "$IB" media iso --bios --kernel vmlinuz --ramdisk initrd --append "$APPEND" --publisher-id "$PUB" -o out.iso ;;
    genisoimage) transfer bios.genisoimage out.iso @iso_ok genisoimage -quiet "${ISO_FLAGS[@]}" -o out.iso tree ;;
    xorriso) transfer bios.xorriso out.iso @iso_ok xorriso -as mkisofs -quiet "${ISO_FLAGS[@]}" -o out.iso tree ;;
    cat) transfer bios.cat out.iso "$(sum_cat "${CAT_BIOS[@]}")" bash -c 'cat "${@:2}" > "$1"' _ out.iso "${CAT_BIOS[@]}" ;;
    cat+fsync) transfer bios.cat-fsync out.iso "$(sum_cat "${CAT_BIOS[@]}")" \
      bash -c 'cat "${@:2}" > "$1" && sync "$1"' _ out.iso "${CAT_BIOS[@]}" ;;
  esac
}
iso_uefi() {
  case $1 in
    ironboot) transfer uefi.ironboot out.iso @iso_ok quiet "$IB" media --grub-efi grubx64.efi iso --bios --uefi \
      --kernel vmlinuz --ramdisk initrd --append "$APPEND" --publisher-id "$PUB" -o out.iso ;;
    genisoimage) transfer uefi.genisoimage out.iso @iso_ok genisoimage -quiet "${UEFI_FLAGS[@]}" -o out.iso uefitree ;;
    xorriso) transfer uefi.xorriso out.iso @iso_ok xorriso -as mkisofs -quiet "${UEFI_FLAGS[@]}" -o out.iso uefitree ;;
    cat) transfer uefi.cat out.iso "$(sum_cat "${CAT_UEFI[@]}")" bash -c 'cat "${@:2}" > "$1"' _ out.iso "${CAT_UEFI[@]}" ;;
    cat+fsync) transfer uefi.cat-fsync out.iso "$(sum_cat "${CAT_UEFI[@]}")" \
      bash -c 'cat "${@:2}" > "$1" && sync "$1"' _ out.iso "${CAT_UEFI[@]}" ;;
  esac
}
floppy() {
  case $1 in
    ironboot) transfer floppy.ironboot out.img @floppy_ok quiet "$IB" media floppy --param ipa-api-url=http://10.0.2.2:6385 \
      --param ipa-agent-token=abc --param boot_method=vmedia --param BOOTIF=52:54:00:12:34:56 -o out.img ;;
    mkfs+mcopy) transfer floppy.mtools out.img @floppy_ok \
      bash -c 'mkfs.msdos -C -n ir-vfd-dev "$1" 1440 > /dev/null && mcopy -i "$1" parameters.txt ::/parameters.txt' _ out.img ;;
    mkfs+mcopy+fsync) transfer floppy.mtools-fsync out.img @floppy_ok \
      bash -c 'mkfs.msdos -C -n ir-vfd-dev "$1" 1440 > /dev/null && mcopy -i "$1" parameters.txt ::/parameters.txt && sync "$1"' _ out.img ;;
  esac
}

echo "   inputs: ${KERNEL_MIB} MiB kernel, ${RAMDISK_MIB} MiB ramdisk (random) in $WORK"
rounds iso_bios ironboot genisoimage xorriso cat cat+fsync
rounds iso_uefi ironboot genisoimage xorriso cat cat+fsync
rounds floppy ironboot mkfs+mcopy mkfs+mcopy+fsync

for c in bios uefi; do
  case $c in
    bios) title="ISO, Ironic's BIOS flags" ;;
    uefi) title="ISO, BIOS + UEFI (prebuilt GRUB / efiboot.img)" ;;
  esac
  compare_all "$title (time per build)" "$c.ironboot" ironboot "$c.genisoimage" genisoimage \
    "$c.xorriso" xorriso "$c.cat" cat "$c.cat-fsync" cat+fsync
  target "$c: time <= 1.0x genisoimage's (lower is better)" "$(ratio_of "$c.ironboot" "$c.genisoimage")" "<=" 1.0
  target "$c: time <= 1.3x cat's (lower is better)" "$(ratio_of "$c.ironboot" "$c.cat")" "<=" 1.3
  # Issue 17: the build (which fsyncs its output) against copying the same bytes and fsyncing.
  target "$c: time <= 1.1x cat+fsync's (lower is better)" "$(ratio_of "$c.ironboot" "$c.cat-fsync")" "<=" 1.1
done
compare_all "floppy, whole processes (time per build)" floppy.ironboot ironboot \
  floppy.mtools mkfs+mcopy floppy.mtools-fsync mkfs+mcopy+fsync
target "floppy: >= 2x as fast as mkfs.msdos + mcopy (speed-up, higher is better)" \
  "$(ratio_of floppy.mtools floppy.ironboot)" ">=" 2.0
bench_finish
