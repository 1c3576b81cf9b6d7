function d = hcData(X, fmt, what)
    % HCDATA  Minibatch data as plain arrays with their format, for the Python side (internal).
    %   D = HCDATA(X, FMT, WHAT) accepts a dlarray, a numeric array, or a cell array of them (several
    %   minibatches, averaged with the right weights by Python). A formatted dlarray gives its own format
    %   (dims) and its stored data (extractdata, already in S..., C, B, T order); otherwise FMT is used.
    %   Returns a struct with
    %     Data    1xM cell of double arrays        Format   char ('' when unknown)
    %     Multi   true when X was a cell array      Sizes    1xM cell of sizes padded to numel(Format),
    %                                                        so trailing singleton dimensions survive
    %   WHAT names the argument in error messages.
    d.Multi = iscell(X);
    if ~d.Multi
        X = {X};
    end
    if isempty(X)
        error('hessiancore:invalidInput', '%s is an empty cell array; give at least one minibatch', what);
    end
    d.Data = cell(1, numel(X));
    d.Sizes = cell(1, numel(X));
    d.Format = '';
    for i = 1:numel(X)
        x = X{i};
        own = hcFormatOf(x, fmt, what);
        if i > 1 && ~strcmp(own, d.Format)
            error('hessiancore:invalidInput', '%s: minibatch %d has format ''%s'' but minibatch 1 has ''%s''', ...
                  what, i, own, d.Format);
        end
        d.Format = own;
        x = hcToDouble(x);
        if ~isempty(own) && ndims(x) > numel(own)
            error('hessiancore:invalidInput', '%s has %d dimensions but its format ''%s'' labels %d', what, ...
                  ndims(x), own, numel(own));
        end
        sz = size(x);
        sz(end + 1:numel(own)) = 1;
        d.Data{i} = x;
        d.Sizes{i} = sz;
    end
end
