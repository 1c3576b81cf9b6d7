classdef dlarray
    % Octave test double of MATLAB's dlarray (Deep Learning Toolbox), from the documentation:
    %   dlX = dlarray(X) is unformatted; dlX = dlarray(X, fmt) labels the dimensions with the characters
    %   of fmt ('S' spatial, 'C' channel, 'B' batch, 'T' time, 'U' unspecified) and PERMUTES the data so
    %   that the labels are in the order S..., C, B, T, U (e.g. dlarray(X, 'BC') is stored as 'CB').
    %   extractdata returns the stored (permuted) data; dims returns the stored format.
    % Only what hessiancore and its examples use is implemented.
    properties (SetAccess = private)
        % Data is not empty by default: Octave 7 consults the overloaded numel/size while the constructor
        % assigns properties, and a 0x0 Data would make the object read as an empty array.
        Data = 0
        Format = ''
    end
    methods

        function obj = dlarray(X, fmt)
            if nargin == 0
                return
            end
            if isa(X, 'dlarray')
                X = X.Data;
            end
            if ~isnumeric(X) && ~islogical(X)
                error('dlarray:invalidData', 'dlarray data must be numeric or logical, got %s', class(X));
            end
            if nargin < 2 || isempty(fmt)
                obj.Data = X;
                return
            end
            fmt = upper(char(fmt));
            if any(~ismember(fmt, 'SCBTU'))
                error('dlarray:invalidFormat', 'format ''%s'' may only contain S, C, B, T and U', fmt);
            end
            if sum(fmt == 'C') > 1 || sum(fmt == 'B') > 1 || sum(fmt == 'T') > 1
                error('dlarray:invalidFormat', 'format ''%s'' has C, B or T more than once', fmt);
            end
            if numel(fmt) < ndims(X) && ~(numel(fmt) == 1 && isvector(X))
                error('dlarray:invalidFormat', 'format ''%s'' has fewer labels than X has dimensions (%d)', ...
                      fmt, ndims(X));
            end
            if numel(fmt) == 1
                % One label: a vector along that dimension.
                obj.Data = X(:);
                obj.Format = fmt;
                return
            end
            [~, order] = sort(arrayfun(@(c) find('SCBTU' == c), fmt));  % stable: S S keep their order
            obj.Data = permute(X, order);
            obj.Format = fmt(order);
        end

        function n = numel(obj, varargin)
            n = numel(obj.Data);
        end

        function X = extractdata(obj)
            X = obj.Data;
        end

        function fmt = dims(obj)
            fmt = obj.Format;
        end

        function X = stripdims(obj)
            X = dlarray(obj.Data);
        end

        function c = underlyingType(obj)
            c = class(obj.Data);
        end

        function varargout = size(obj, varargin)
            [varargout{1:max(nargout, 1)}] = size(obj.Data, varargin{:});
        end

        function n = ndims(obj)
            n = ndims(obj.Data);
        end

        function d = double(obj)
            % MATLAB errors here for dlarray too: callers must use extractdata.
            error('dlarray:double', 'use extractdata to get the data of a dlarray');
        end

    end
end
