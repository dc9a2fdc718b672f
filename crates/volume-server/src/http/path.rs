//! The URL forms of a file id (weed's `parseURLPath`):
//! `/<vid>,<fid>[.ext]`, `/<vid>/<fid>[.ext]` and `/<vid>/<fid>/<filename>`.

use needle::{FidError, FileId, VolumeId};

/// A parsed file URL.
#[derive(Debug, PartialEq, Eq)]
pub struct FileUrl {
    pub volume: VolumeId,
    pub fid: FileId,
    /// The `<filename>` segment of the three-part form.
    pub filename: Option<String>,
    /// The extension given in the URL (`.jpg`), if any.
    pub ext: String,
    /// Whether this is the `/<vid>,<fid>` form, the only one writes accept.
    pub comma_form: bool,
}

/// Why a path does not name a file.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{0}")]
    BadVolume(FidError),
    #[error("Invalid fid: {input}: {source}")]
    BadFid { input: String, source: FidError },
    #[error("{0:?} is not /<vid>,<fid>, /<vid>/<fid> or /<vid>/<fid>/<filename>")]
    Shape(String),
}

/// A file URL cut into its parts' text, nothing validated yet (weed's `parseURLPath`):
/// what weed's JWT check compares with a token's `fid` claim.
#[derive(Debug, PartialEq, Eq)]
pub struct RawUrl<'a> {
    pub vid: &'a str,
    /// The file id, extension cut off.
    pub fid: &'a str,
    filename: Option<&'a str>,
    ext: &'a str,
    comma_form: bool,
}

/// The parser's entry point: a request's URL path (no query) cut into its parts, which
/// [`RawUrl::parse`] then validates.
pub fn split(path: &str) -> Result<RawUrl<'_>, PathError> {
    let segments: Vec<&str> = path.split('/').collect();
    let (vid, fid, filename, comma_form) = match segments.as_slice() {
        ["", one] => {
            let (vid, fid) = one.split_once(',').ok_or_else(|| PathError::Shape(path.to_owned()))?;
            (vid, fid, None, true)
        }
        ["", vid, fid] => (*vid, *fid, None, false),
        ["", vid, fid, name] => (*vid, *fid, Some(*name), false),
        _ => return Err(PathError::Shape(path.to_owned())),
    };
    let (fid, ext) = match (filename, fid.rfind('.')) {
        (None, Some(dot)) if dot > 0 => (&fid[..dot], &fid[dot..]),
        (Some(name), _) => (fid, super::mime::extension(name)),
        _ => (fid, ""),
    };
    Ok(RawUrl { vid, fid, filename, ext, comma_form })
}

impl RawUrl<'_> {
    /// The volume id, alone (writes check it before the token).
    pub fn volume(&self) -> Result<VolumeId, PathError> {
        self.vid.parse().map_err(PathError::BadVolume)
    }

    pub fn parse(&self) -> Result<FileUrl, PathError> {
        let volume = self.volume()?;
        let fid = FileId::parse_in_volume(volume, self.fid)
            .map_err(|source| PathError::BadFid { input: self.fid.to_owned(), source })?;
        Ok(FileUrl {
            volume,
            fid,
            filename: self.filename.map(str::to_owned),
            ext: self.ext.to_owned(),
            comma_form: self.comma_form,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use needle::{Cookie, NeedleId};

    fn parse(path: &str) -> Result<FileUrl, PathError> {
        split(path)?.parse()
    }

    #[test]
    fn url_forms() {
        let u = parse("/3,01637037d6.jpg").unwrap();
        assert_eq!(
            (u.volume, u.fid.needle_id(), u.fid.cookie, u.ext.as_str(), u.comma_form),
            (VolumeId(3), NeedleId(1), Cookie(0x637037d6), ".jpg", true)
        );
        let u = parse("/3/01637037d6").unwrap();
        assert!(!u.comma_form && u.ext.is_empty());
        let u = parse("/3/01637037d6/my.pdf").unwrap();
        assert_eq!((u.filename.as_deref(), u.ext.as_str()), (Some("my.pdf"), ".pdf"));
        assert_eq!(parse("/4,0b8faef8b2_2").unwrap().fid.needle_id(), NeedleId(0x0d));
        assert!(matches!(parse("/3"), Err(PathError::Shape(_))));
        assert!(matches!(parse("/x,01637037d6"), Err(PathError::BadVolume(_))));
        assert!(matches!(parse("/3,zz"), Err(PathError::BadFid { .. })));
        assert!(matches!(parse("/1,ffffffffffffffff00000000_1"), Err(PathError::BadFid { .. })));
        assert!(matches!(parse("/a/b/c/d"), Err(PathError::Shape(_))));
        let raw = split("/3/01637037d6_1.jpg").unwrap();
        assert_eq!((raw.vid, raw.fid), ("3", "01637037d6_1"));
        assert_eq!(split("/x,zz").map(|r| (r.vid, r.fid)), Ok(("x", "zz")));
    }
}
