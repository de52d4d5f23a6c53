#!/bin/bash
# Virtual media build speed: ironboot vs the tools Ironic shells out to, in one run, same inputs.
#
#   ISO (BIOS, Ironic's mkisofs flags): ironboot media iso --bios
#        vs genisoimage and `xorriso -as mkisofs` with
#           -r -V VMEDIA_BOOT_ISO -J -l -publisher ID -no-emul-boot -boot-load-size 4
#           -boot-info-table -b isolinux/isolinux.bin
#        vs cat of the same bytes into one file (the physical limit).
#   ISO (BIOS + UEFI): ironboot --bios --uefi (ESP built in-process from a prebuilt GRUB image)
#        vs genisoimage / xorriso with the pre-2020 Ironic hybrid flags and a prebuilt
#        efiboot.img (-eltorito-alt-boot -e boot/grub/efiboot.img -no-emul-boot).
#   Floppy: ironboot media floppy vs mkfs.msdos -C + mcopy (Ironic's create_vfat_image), as
#        whole processes, and the same followed by an fsync of the image (what ironboot does).
#
# Inputs: a 10 MiB kernel and a 200 MiB ramdisk of random bytes, page cache warm, outputs on
# the same file system as the inputs. ironboot fsyncs what it writes (it must: nodes fetch
# these files); the peers do not, so `cat+fsync` (cat, then fsync the output with `sync FILE`)
# is the physical limit for a durable write. Prints hyperfine's tables and the ratios.
#
# Usage: benches/media.sh            (builds ironboot --release into $CARGO_TARGET_DIR or target/)
# Env:   RUNS (default 10), WORK (scratch dir, default a temp dir under the target dir)
# Needs: hyperfine genisoimage xorriso isolinux syslinux-common grub-common grub-efi-amd64-bin
#        dosfstools mtools python3
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
TARGET=${CARGO_TARGET_DIR:-target}
for t in hyperfine genisoimage xorriso mkfs.msdos mcopy python3; do
  command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || { echo "missing $t" >&2; exit 2; }
done
export PATH="$PATH:/usr/sbin:/sbin"

cargo build --release --quiet --bin ironboot
IB=$(realpath "$TARGET/release/ironboot")
WORK=${WORK:-$(mktemp -d "$(realpath "$TARGET")/media-bench.XXXXXX")}
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

echo "== inputs: 10 MiB kernel, 200 MiB ramdisk (random), in $WORK"
head -c $((10 << 20)) /dev/urandom > vmlinuz
head -c $((200 << 20)) /dev/urandom > initrd
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
"$IB" media grub-efi -o grubx64.efi >/dev/null
mkdir -p uefitree/boot/grub uefitree/isolinux uefitree/EFI/BOOT
ln vmlinuz uefitree/vmlinuz
ln initrd uefitree/initrd
cp tree/isolinux/* uefitree/isolinux/
printf 'set timeout=0\nmenuentry boot {\n linux /vmlinuz %s\n initrd /initrd\n}\n' "$APPEND" > uefitree/EFI/BOOT/grub.cfg
mkfs.msdos -C uefitree/boot/grub/efiboot.img 1024 >/dev/null
mmd -i uefitree/boot/grub/efiboot.img ::/EFI ::/EFI/BOOT
mcopy -i uefitree/boot/grub/efiboot.img grubx64.efi ::/EFI/BOOT/BOOTX64.EFI
mcopy -i uefitree/boot/grub/efiboot.img uefitree/EFI/BOOT/grub.cfg ::/EFI/BOOT/grub.cfg

ISO_FLAGS="-r -V VMEDIA_BOOT_ISO -J -l -publisher $PUB -no-emul-boot -boot-load-size 4 -boot-info-table -b isolinux/isolinux.bin"
UEFI_FLAGS="$ISO_FLAGS -eltorito-alt-boot -e boot/grub/efiboot.img -no-emul-boot"
printf 'ipa-api-url=http://10.0.2.2:6385\nipa-agent-token=abc\nboot_method=vmedia\nBOOTIF=52:54:00:12:34:56' > parameters.txt

bench() {  # name, then hyperfine arguments
  local name=$1; shift
  echo
  echo "== $name"
  hyperfine --warmup 2 --runs "$RUNS" --export-json "$name.json" "$@"
}

bench iso-bios \
  -n ironboot "$IB media iso --bios --kernel vmlinuz --ramdisk initrd --append '$APPEND' --publisher-id $PUB -o ib.iso" \
  -n genisoimage "genisoimage -quiet $ISO_FLAGS -o gen.iso tree" \
  -n xorriso "xorriso -as mkisofs -quiet $ISO_FLAGS -o xo.iso tree" \
  -n cat "cat vmlinuz initrd tree/isolinux/isolinux.bin tree/isolinux/ldlinux.c32 > cat.iso" \
  -n cat+fsync "cat vmlinuz initrd tree/isolinux/isolinux.bin tree/isolinux/ldlinux.c32 > cat.iso && sync cat.iso"

bench iso-bios-uefi \
  -n ironboot "$IB media --grub-efi grubx64.efi iso --bios --uefi --kernel vmlinuz --ramdisk initrd --append '$APPEND' --publisher-id $PUB -o ib2.iso" \
  -n genisoimage "genisoimage -quiet $UEFI_FLAGS -o gen2.iso uefitree" \
  -n xorriso "xorriso -as mkisofs -quiet $UEFI_FLAGS -o xo2.iso uefitree" \
  -n cat "cat vmlinuz initrd uefitree/boot/grub/efiboot.img uefitree/isolinux/isolinux.bin uefitree/isolinux/ldlinux.c32 > cat2.iso" \
  -n cat+fsync "cat vmlinuz initrd uefitree/boot/grub/efiboot.img uefitree/isolinux/isolinux.bin uefitree/isolinux/ldlinux.c32 > cat2.iso && sync cat2.iso"

bench floppy \
  -n ironboot "$IB media floppy --param ipa-api-url=http://10.0.2.2:6385 --param ipa-agent-token=abc --param boot_method=vmedia --param BOOTIF=52:54:00:12:34:56 -o ib.img" \
  -n mkfs+mcopy "rm -f mt.img && mkfs.msdos -C -n ir-vfd-dev mt.img 1440 >/dev/null && mcopy -i mt.img parameters.txt ::/parameters.txt" \
  -n mkfs+mcopy+fsync "rm -f mt.img && mkfs.msdos -C -n ir-vfd-dev mt.img 1440 >/dev/null && mcopy -i mt.img parameters.txt ::/parameters.txt && sync mt.img"

echo
echo "== sizes"
ls -l ib.iso gen.iso xo.iso cat.iso ib2.iso gen2.iso xo2.iso ib.img mt.img | awk '{printf "%-10s %12d\n", $9, $5}'

echo
echo "== ratios (mean times; < 1 means ironboot is faster)"
python3 - <<'PY'
import json
def means(name):
    return {r["command"]: r["mean"] for r in json.load(open(f"{name}.json"))["results"]}
for name in ("iso-bios", "iso-bios-uefi"):
    m = means(name)
    ib = m["ironboot"]
    print(f"{name:14} ironboot {ib*1000:7.1f} ms | " + " | ".join(
        f"{peer} {m[peer]*1000:7.1f} ms ({ib/m[peer]:.2f}x)" for peer in ("genisoimage", "xorriso", "cat", "cat+fsync")))
m = means("floppy")
ib = m["ironboot"]
print(f"{'floppy':14} ironboot {ib*1000:7.1f} ms | " + " | ".join(
    f"{peer} {m[peer]*1000:6.1f} ms (ironboot {m[peer]/ib:.2f}x as fast)" for peer in ("mkfs+mcopy", "mkfs+mcopy+fsync")))
PY
