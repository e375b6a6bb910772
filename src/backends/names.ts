// Keys and queue names as single path components (a directory, a znode): bytes outside
// [A-Za-z0-9_-], and a leading dot, are %XX-encoded, so no name contains `/` or is `.` or `..`,
// and the encoding reads back for `lock status` and `queue status`.

export function percentEncode(name: string): string {
  let out = ''
  const bytes = Buffer.from(name, 'utf8')
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]
    const plain = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x5f || b === 0x2d || (b === 0x2e && i > 0)
    out += plain ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

export function percentDecode(component: string): string {
  return Buffer.from(component.replace(/%([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16))), 'latin1').toString('utf8')
}
