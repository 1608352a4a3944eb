package bpf

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// Crafted frames for BPF_PROG_TEST_RUN. Checksums matter only for the IPv4
// header (the program updates it incrementally and tests verify the result).

type frame struct {
	dstMAC, srcMAC net.HardwareAddr
	src, dst       netip.Addr
	ttl            uint8
	fragment       bool // IPv4: MF set; IPv6: a fragment extension header
	payload        int  // UDP payload bytes
}

func (f frame) bytes() []byte {
	eth := make([]byte, 14)
	copy(eth[0:6], f.dstMAC)
	copy(eth[6:12], f.srcMAC)
	udp := make([]byte, 8+f.payload)
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 5201)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	ttl := f.ttl
	if ttl == 0 {
		ttl = 64
	}
	if f.src.Is4() {
		binary.BigEndian.PutUint16(eth[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		binary.BigEndian.PutUint16(ip[4:], 0x1234)
		if f.fragment {
			binary.BigEndian.PutUint16(ip[6:], 0x2000) // MF
		}
		ip[8] = ttl
		ip[9] = 17
		s, d := f.src.As4(), f.dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
		return append(append(eth, ip...), udp...)
	}
	binary.BigEndian.PutUint16(eth[12:], 0x86dd)
	ip := make([]byte, 40)
	ip[0] = 0x60
	next := byte(17)
	var ext []byte
	if f.fragment {
		next = 44
		ext = make([]byte, 8)
		ext[0] = 17
		binary.BigEndian.PutUint16(ext[2:], 1) // offset 0, M flag
		binary.BigEndian.PutUint32(ext[4:], 0xabcd)
	}
	binary.BigEndian.PutUint16(ip[4:], uint16(len(ext)+len(udp)))
	ip[6] = next
	ip[7] = ttl
	s, d := f.src.As16(), f.dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(append(append(eth, ip...), ext...), udp...)
}

func arpFrame(srcMAC net.HardwareAddr, sender, target netip.Addr) []byte {
	b := make([]byte, 14+28)
	copy(b[0:6], net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:], 0x0806)
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], 0x0800)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1)
	copy(a[8:], srcMAC)
	s, t := sender.As4(), target.As4()
	copy(a[14:], s[:])
	copy(a[24:], t[:])
	return b
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		if i == 10 {
			continue
		}
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
