//! Splitting a stream into up to three streams of different types, in one operator.
//!
//! A stage that produces several kinds of output (book changes and best prices; the window's
//! changes, accepted trades and symbols outside it; book events, trades and rare records; names,
//! dead letters and ends) emits one stream of an enum, and [`split3`] routes each record to the
//! stream of its kind. timely's `partition` followed by a `flat_map` per part does the same with
//! one operator more per part, each with its own scheduling and progress tracking at every
//! timestamp, and copies every record twice.
//!
//! Invariant: a record leaves at the time it arrived, on exactly one output; the operator holds
//! no capability and keeps nothing.

use std::convert::Infallible;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;
use timely::progress::operate::FrontierInterest;

/// Which output a record goes to, and as what.
pub enum Part3<A, B, C> {
    /// The first output.
    First(A),
    /// The second output.
    Second(B),
    /// The third output.
    Third(C),
}

/// The three streams of [`split3`].
pub type Split3<'s, A, B, C> = (
    StreamVec<'s, u64, A>,
    StreamVec<'s, u64, B>,
    StreamVec<'s, u64, C>,
);

/// Routes every record of `stream` to one of three streams (see the module doc).
pub fn split3<'s, D, A, B, C, F>(
    stream: StreamVec<'s, u64, D>,
    name: &str,
    mut route: F,
) -> Split3<'s, A, B, C>
where
    D: Clone + 'static,
    A: Clone + 'static,
    B: Clone + 'static,
    C: Clone + 'static,
    F: FnMut(D) -> Part3<A, B, C> + 'static,
{
    let mut builder = OperatorBuilder::new(name.to_owned(), stream.scope());
    let mut input = builder.new_input(stream, Pipeline);
    builder.set_notify_for(0, FrontierInterest::Never);
    let (first, first_stream) = builder.new_output::<Vec<A>>();
    let (second, second_stream) = builder.new_output::<Vec<B>>();
    let (third, third_stream) = builder.new_output::<Vec<C>>();
    let mut first = OutputBuilder::<_, CapacityContainerBuilder<Vec<A>>>::from(first);
    let mut second = OutputBuilder::<_, CapacityContainerBuilder<Vec<B>>>::from(second);
    let mut third = OutputBuilder::<_, CapacityContainerBuilder<Vec<C>>>::from(third);
    builder.build(move |_capabilities| {
        move |_frontiers| {
            let (mut first, mut second, mut third) =
                (first.activate(), second.activate(), third.activate());
            input.for_each(|capability, data| {
                let mut first = first.session(&capability);
                let mut second = second.session(&capability);
                let mut third = third.session(&capability);
                for record in data.drain(..) {
                    match route(record) {
                        Part3::First(a) => first.give(a),
                        Part3::Second(b) => second.give(b),
                        Part3::Third(c) => third.give(c),
                    }
                }
            });
        }
    });
    (first_stream, second_stream, third_stream)
}

/// [`split3`] with two outputs.
pub fn split2<'s, D, A, B, F>(
    stream: StreamVec<'s, u64, D>,
    name: &str,
    mut route: F,
) -> (StreamVec<'s, u64, A>, StreamVec<'s, u64, B>)
where
    D: Clone + 'static,
    A: Clone + 'static,
    B: Clone + 'static,
    F: FnMut(D) -> Result<A, B> + 'static,
{
    let (a, b, _never) = split3::<D, A, B, Infallible, _>(stream, name, move |d| match route(d) {
        Ok(a) => Part3::First(a),
        Err(b) => Part3::Second(b),
    });
    (a, b)
}
