//! Secret types are scrubbed on drop and can be neither cloned nor printed (a stray
//! `#[derive(Clone, Debug)]` would fail to compile this test).

use escx::content::ContentKey;
use escx::kem::KemSecretKey;
use escx::sig::SecretKey;

/// Compiles only if `$type` does not implement `$trait`: with an implementation, the two
/// blanket impls below both apply and the call is ambiguous.
macro_rules! assert_not_impl {
    ($type:ty: $trait:path) => {{
        trait AmbiguousIfImplemented<Marker> {
            fn check() {}
        }
        impl<T: ?Sized> AmbiguousIfImplemented<()> for T {}
        #[allow(dead_code)]
        struct Implemented;
        impl<T: ?Sized + $trait> AmbiguousIfImplemented<Implemented> for T {}
        <$type as AmbiguousIfImplemented<_>>::check();
    }};
}

fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}

#[test]
fn secrets_are_neither_clone_nor_debug_and_are_scrubbed_on_drop() {
    assert_not_impl!(SecretKey: Clone);
    assert_not_impl!(SecretKey: std::fmt::Debug);
    assert_not_impl!(KemSecretKey: Clone);
    assert_not_impl!(KemSecretKey: std::fmt::Debug);
    assert_not_impl!(ContentKey: Clone);
    assert_not_impl!(ContentKey: std::fmt::Debug);
    zeroized_on_drop::<SecretKey>();
    zeroized_on_drop::<KemSecretKey>();
    zeroized_on_drop::<ContentKey>();
}
