//! P-DATA: fragmenting outgoing messages to the peer's max PDU, and
//! reassembling incoming command sets. Data sets are streamed, never
//! assembled here.

use super::message::Command;
use super::DimseError;
use dicom_ul::association::AsyncAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// What an association runs over: TCP, or TLS over TCP.
pub trait Wire: AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Wire for T {}

/// PDV item header (4-byte length, context id, control header) inside a P-DATA-TF.
const PDV_HEADER: u32 = 6;
/// A command set is a few hundred bytes; anything near this is an attack or a bug.
pub const MAX_COMMAND_SET: usize = 64 * 1024;

/// Largest PDV payload the peer accepts.
pub fn max_fragment(peer_max_pdu: u32) -> usize {
    // 0 means "no limit"; still keep our own fragments reasonable.
    let peer = if peer_max_pdu == 0 {
        1 << 20
    } else {
        peer_max_pdu
    };
    // DCMTK refuses odd-length fragments ("Odd Fragment Length"): keep them even.
    (peer.saturating_sub(PDV_HEADER).clamp(2, 1 << 20) & !1) as usize
}

async fn send_fragment<A, S: Wire>(
    assoc: &mut A,
    pc_id: u8,
    value_type: PDataValueType,
    is_last: bool,
    data: Vec<u8>,
) -> Result<(), DimseError>
where
    A: AsyncAssociation<S> + Send,
{
    let pdu = Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type,
            is_last,
            data,
        }],
    };
    AsyncAssociation::send(assoc, &pdu)
        .await
        .map_err(DimseError::send)
}

/// Send a command set, fragmented to the peer's max PDU.
pub async fn send_command<A, S: Wire>(
    assoc: &mut A,
    pc_id: u8,
    cmd: &Command,
) -> Result<(), DimseError>
where
    A: AsyncAssociation<S> + Send,
{
    let bytes = cmd.encode()?;
    let max = max_fragment(assoc.peer_max_pdu_length());
    let chunks: Vec<&[u8]> = bytes.chunks(max).collect();
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        send_fragment::<A, S>(
            assoc,
            pc_id,
            PDataValueType::Command,
            i + 1 == n,
            chunk.to_vec(),
        )
        .await?;
    }
    Ok(())
}

/// Send a data set held in memory (identifiers, commitment lists): its
/// PDUs in one write, in a buffer of its size.
pub async fn send_data_set<A, S: Wire>(
    assoc: &mut A,
    pc_id: u8,
    bytes: &[u8],
) -> Result<(), DimseError>
where
    A: AsyncAssociation<S> + Send,
{
    let max = max_fragment(assoc.peer_max_pdu_length());
    let fragments: Vec<&[u8]> = match bytes.is_empty() {
        true => vec![bytes],
        false => bytes.chunks(max).collect(),
    };
    let mut pdus = Vec::with_capacity(bytes.len() + fragments.len() * PDATA_HEADER);
    for (i, f) in fragments.iter().enumerate() {
        let control = if i + 1 == fragments.len() {
            LAST_FRAGMENT
        } else {
            0
        };
        pdus.extend_from_slice(&[PDATA_TF, 0]);
        pdus.extend_from_slice(&(PDV_HEADER + f.len() as u32).to_be_bytes());
        pdus.extend_from_slice(&(2 + f.len() as u32).to_be_bytes());
        pdus.extend_from_slice(&[pc_id, control]);
        pdus.extend_from_slice(f);
    }
    assoc
        .inner_stream()
        .write_all(&pdus)
        .await
        .map_err(DimseError::send)
}

/// P-DATA-TF PDU header (type, reserved, length) and PDV item header.
const PDATA_HEADER: usize = 6 + PDV_HEADER as usize;
/// P-DATA-TF PDU type.
const PDATA_TF: u8 = 0x04;
/// PDV message control header: last fragment (PS3.8 E.2); data, not command.
const LAST_FRAGMENT: u8 = 0x02;

/// Bytes of P-DATA-TF PDUs gathered into one socket write: with a peer's
/// 16 KiB max PDU, one write per PDU was a write system call (and a wake-up
/// of the receiver) every 16 KiB, a third of a retrieve's CPU.
const WRITE_BATCH: usize = 256 * 1024;

/// Stream a data set from `reader` to the peer, a batch of fragments in
/// memory at a time. The P-DATA-TF PDUs go straight to the socket, several
/// per write: dicom-ul's `send` copies every fragment twice into buffers of
/// its own, which was a third of the CPU of a C-STORE stream.
/// `write_timeout` bounds each write (dicom-ul's own timeout does not apply
/// here).
pub async fn send_data_stream<A, S: Wire, R>(
    assoc: &mut A,
    pc_id: u8,
    mut reader: R,
    write_timeout: Option<Duration>,
) -> Result<(), DimseError>
where
    A: AsyncAssociation<S> + Send,
    R: AsyncRead + Unpin,
{
    let max = max_fragment(assoc.peer_max_pdu_length());
    let mut batches = PduBatches::new(pc_id, max, WRITE_BATCH);
    loop {
        let (pdus, ended) = batches.next(&mut reader).await?;
        let write = assoc.inner_stream().write_all(pdus);
        match write_timeout {
            Some(t) => tokio::time::timeout(t, write).await.map_err(|_| {
                DimseError::send(format!("no progress writing for {} s", t.as_secs()))
            })?,
            None => write.await,
        }
        .map_err(DimseError::send)?;
        if ended {
            return Ok(());
        }
    }
}

/// A data set read into P-DATA-TF PDUs (one PDV each), a batch at a time.
struct PduBatches {
    pc_id: u8,
    max: usize,
    slots: usize,
    /// PDUs laid out back to back: every fragment but the last is full.
    buf: Vec<u8>,
    /// One byte read past a full batch, to know whether its last fragment
    /// is the data set's last.
    carry: Option<u8>,
}

impl PduBatches {
    fn new(pc_id: u8, max: usize, batch: usize) -> PduBatches {
        let slots = (batch / (PDATA_HEADER + max)).max(1);
        PduBatches {
            pc_id,
            max,
            slots,
            buf: vec![0u8; slots * (PDATA_HEADER + max)],
            carry: None,
        }
    }

    /// The next batch of PDUs, and whether it ends the data set.
    async fn next<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<(&[u8], bool), DimseError> {
        let (max, slot) = (self.max, PDATA_HEADER + self.max);
        let mut lens = Vec::with_capacity(self.slots);
        let mut ended = false;
        for i in 0..self.slots {
            let data = &mut self.buf[i * slot + PDATA_HEADER..(i + 1) * slot];
            let mut at = 0;
            if let Some(b) = self.carry.take() {
                data[0] = b;
                at = 1;
            }
            let n = at + fill(reader, &mut data[at..]).await?;
            lens.push(n);
            if n < max {
                ended = true;
                break;
            }
        }
        if !ended {
            let mut one = [0u8; 1];
            match fill(reader, &mut one).await? {
                0 => ended = true,
                _ => self.carry = Some(one[0]),
            }
        }
        // Data that ended on a fragment boundary: no empty fragment after it
        // (an empty data set still gets its one, empty, last fragment).
        if ended && lens.len() > 1 && lens.last() == Some(&0) {
            lens.pop();
        }
        for (i, &len) in lens.iter().enumerate() {
            let is_last = ended && i + 1 == lens.len();
            let pdu = &mut self.buf[i * slot..i * slot + PDATA_HEADER];
            pdu[0] = PDATA_TF;
            pdu[1] = 0;
            pdu[2..6].copy_from_slice(&(PDV_HEADER + len as u32).to_be_bytes());
            pdu[6..10].copy_from_slice(&(2 + len as u32).to_be_bytes());
            pdu[10] = self.pc_id;
            pdu[11] = if is_last { LAST_FRAGMENT } else { 0 };
        }
        let end = (lens.len() - 1) * slot + PDATA_HEADER + lens[lens.len() - 1];
        Ok((&self.buf[..end], ended))
    }
}

/// Reads until `buf` is full or the reader ends; how much was read.
async fn fill<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> Result<usize, DimseError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DimseError::DataSource(e)),
        }
    }
    Ok(filled)
}

/// PDUs read straight from the socket, P-DATA values handed out as slices
/// of the read buffer: dicom-ul's `receive` copies each PDU's bytes three
/// times, which is a tenth of a retrieve's CPU. Only for an association
/// whose peer has sent nothing since it was established (dicom-ul's own read
/// buffer is then empty).
#[derive(Default)]
pub struct PduReader {
    buf: bytes::BytesMut,
}

/// One PDU as [`PduReader`] sees it.
pub enum RawPdu {
    /// The P-DATA-TF's value items: (context id, is command, is last, data).
    PData(Vec<(u8, bool, bool, bytes::Bytes)>),
    Abort,
    /// Any other PDU type (the peer has no business sending it now).
    Other(u8),
}

/// A PDU longer than this is not one we asked for (our max PDU is at most 16 MiB).
const MAX_PDU: usize = 16 * 1024 * 1024 + 6;

impl PduReader {
    pub async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<RawPdu, DimseError> {
        self.fill(r, 6).await?;
        let kind = self.buf[0];
        let len = u32::from_be_bytes([self.buf[2], self.buf[3], self.buf[4], self.buf[5]]) as usize;
        if len > MAX_PDU {
            return Err(DimseError::Protocol(format!("PDU of {len} bytes")));
        }
        self.fill(r, 6 + len).await?;
        let mut body = self.buf.split_to(6 + len).freeze().split_off(6);
        match kind {
            0x04 => {
                let mut values = Vec::new();
                while !body.is_empty() {
                    if body.len() < 6 {
                        return Err(DimseError::Protocol("truncated PDV item".into()));
                    }
                    let item = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
                    if item < 2 || item + 4 > body.len() {
                        return Err(DimseError::Protocol("PDV item length out of bounds".into()));
                    }
                    let (pc, control) = (body[4], body[5]);
                    let data = body.slice(6..4 + item);
                    values.push((pc, control & 1 == 1, control & 2 == 2, data));
                    body = body.split_off(4 + item);
                }
                Ok(RawPdu::PData(values))
            }
            0x07 => Ok(RawPdu::Abort),
            other => Ok(RawPdu::Other(other)),
        }
    }

    /// Read until `n` bytes are buffered. Cancel-safe: what was read stays.
    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R, n: usize) -> Result<(), DimseError> {
        while self.buf.len() < n {
            // Grows with what arrives, not with what the PDU declares.
            self.buf
                .reserve((n - self.buf.len()).clamp(64 * 1024, 1024 * 1024));
            let got = r
                .read_buf(&mut self.buf)
                .await
                .map_err(DimseError::receive)?;
            if got == 0 {
                return Err(DimseError::receive("the peer closed the connection"));
            }
        }
        Ok(())
    }
}

/// Reassembles a command set from one or more command PDVs.
#[derive(Default)]
pub struct CommandAssembler {
    pc_id: Option<u8>,
    bytes: Vec<u8>,
}

impl CommandAssembler {
    pub fn in_progress(&self) -> bool {
        self.pc_id.is_some()
    }

    /// Add one command fragment; returns the command once the last fragment is in.
    pub fn push(&mut self, pdv: PDataValue) -> Result<Option<(u8, Command)>, DimseError> {
        if let Some(pc) = self.pc_id {
            if pc != pdv.presentation_context_id {
                return Err(DimseError::Protocol(format!(
                    "command fragments on two presentation contexts ({pc} and {})",
                    pdv.presentation_context_id
                )));
            }
        }
        self.pc_id = Some(pdv.presentation_context_id);
        if self.bytes.len() + pdv.data.len() > MAX_COMMAND_SET {
            return Err(DimseError::Protocol(
                "command set larger than 64 KiB".into(),
            ));
        }
        self.bytes.extend_from_slice(&pdv.data);
        if !pdv.is_last {
            return Ok(None);
        }
        let pc = pdv.presentation_context_id;
        self.pc_id = None;
        let bytes = std::mem::take(&mut self.bytes);
        Ok(Some((pc, Command::decode(&bytes)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdv(pc: u8, is_last: bool, data: &[u8]) -> PDataValue {
        PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Command,
            is_last,
            data: data.to_vec(),
        }
    }

    #[test]
    fn reassembles_a_command_split_over_many_fragments() {
        let cmd = Command::c_store_rq(9, "1.2.840.10008.5.1.4.1.1.2", "1.2.3");
        let bytes = cmd.encode().unwrap();
        let mut asm = CommandAssembler::default();
        let chunks: Vec<_> = bytes.chunks(7).collect();
        for (i, c) in chunks.iter().enumerate() {
            let out = asm.push(pdv(3, i + 1 == chunks.len(), c)).unwrap();
            if i + 1 < chunks.len() {
                assert!(out.is_none());
                assert!(asm.in_progress());
            } else {
                assert_eq!(out, Some((3, cmd.clone())));
            }
        }
        assert!(!asm.in_progress());
    }

    #[test]
    fn refuses_fragments_on_two_contexts() {
        let mut asm = CommandAssembler::default();
        asm.push(pdv(1, false, &[0; 4])).unwrap();
        assert!(asm.push(pdv(3, true, &[0; 4])).is_err());
    }

    #[test]
    fn refuses_oversized_command_sets() {
        let mut asm = CommandAssembler::default();
        let big = vec![0u8; 40 * 1024];
        asm.push(pdv(1, false, &big)).unwrap();
        assert!(asm.push(pdv(1, false, &big)).is_err());
    }

    #[tokio::test]
    async fn reads_p_data_values_and_other_pdus_in_any_chunking() {
        let mut wire = Vec::new();
        let pdvs: [(u8, u8, &[u8]); 2] = [(1, 0b11, b"cmd!"), (3, 0b10, b"data bytes")];
        let body_len: usize = pdvs.iter().map(|(_, _, d)| 6 + d.len()).sum();
        wire.extend_from_slice(&[4, 0]);
        wire.extend_from_slice(&(body_len as u32).to_be_bytes());
        for (pc, ctl, d) in pdvs {
            wire.extend_from_slice(&((d.len() + 2) as u32).to_be_bytes());
            wire.extend_from_slice(&[pc, ctl]);
            wire.extend_from_slice(d);
        }
        wire.extend_from_slice(&[7, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
        for chunk in [1, 5, 1000] {
            let (mut tx, mut rx) = tokio::io::duplex(chunk);
            let bytes = wire.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for c in bytes.chunks(chunk) {
                    tx.write_all(c).await.unwrap();
                }
            });
            let mut reader = PduReader::default();
            match reader.next(&mut rx).await.unwrap() {
                RawPdu::PData(v) => {
                    assert_eq!(v.len(), 2);
                    assert_eq!(
                        (v[0].0, v[0].1, v[0].2, &v[0].3[..]),
                        (1, true, true, &b"cmd!"[..])
                    );
                    assert_eq!(
                        (v[1].0, v[1].1, v[1].2, &v[1].3[..]),
                        (3, false, true, &b"data bytes"[..])
                    );
                }
                _ => panic!("not P-DATA"),
            }
            assert!(matches!(reader.next(&mut rx).await.unwrap(), RawPdu::Abort));
            assert!(reader.next(&mut rx).await.is_err(), "closed");
        }
    }

    #[tokio::test]
    async fn refuses_broken_items() {
        // A PDV item claiming more than the PDU holds.
        let wire = [4u8, 0, 0, 0, 0, 8, 0, 0, 0, 9, 1, 3, 0, 0];
        let mut r = PduReader::default();
        assert!(r.next(&mut &wire[..]).await.is_err());
    }

    #[tokio::test]
    async fn batches_pdus_with_the_last_flag_on_the_last_fragment_only() {
        // max 4, batches of 3 PDUs: lengths around every boundary.
        let batch = 3 * (PDATA_HEADER + 4);
        for n in 0..40usize {
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut reader = &data[..];
            let mut batches = PduBatches::new(5, 4, batch);
            let mut wire = Vec::new();
            loop {
                let (pdus, ended) = batches.next(&mut reader).await.unwrap();
                assert!(pdus.len() <= batch);
                wire.extend_from_slice(pdus);
                if ended {
                    break;
                }
            }
            let mut r = PduReader::default();
            let (mut got, mut lasts) = (Vec::new(), Vec::new());
            let mut rest = &wire[..];
            // It reads ahead: the PDUs end where it finds the input closed.
            while let Ok(pdu) = r.next(&mut rest).await {
                let RawPdu::PData(values) = pdu else {
                    panic!("not P-DATA");
                };
                for (pc, is_command, is_last, d) in values {
                    assert_eq!((pc, is_command), (5, false));
                    assert!(!d.is_empty() || n == 0, "an empty fragment for {n} bytes");
                    got.extend_from_slice(&d);
                    lasts.push(is_last);
                }
            }
            assert_eq!(got, data, "{n} bytes");
            let expected: Vec<bool> = (0..lasts.len()).map(|i| i + 1 == lasts.len()).collect();
            assert_eq!(lasts, expected, "{n} bytes");
        }
    }

    #[test]
    fn fragment_size_respects_peer_limit() {
        assert_eq!(max_fragment(16384), 16378);
        assert_eq!(max_fragment(0), (1 << 20) - 6);
        assert_eq!(max_fragment(16385), 16378);
        assert_eq!(max_fragment(7), 2);
    }
}
